"""The guide's multi-server operations: Replication Engine, CRM services, library, metadata, capacity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.api_errors import API_ERROR_RESPONSES
from config.input_types import Bool
from controller.api.deps import AdminActor, Context, OperatorActor, ViewerActor
from controller.cluster_ops import capacity, library, metadata, replication_engine
from controller.cluster_ops import services as crm_services
from controller.errors import InvalidChange
from node_agent.protocol import UncPath

router = APIRouter(prefix="/api/v1", tags=["operations"], responses=API_ERROR_RESPONSES)

_NAME = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$"


class EnginePlacement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(pattern=_NAME)


class ServicesPlacement(BaseModel):
    """Nodes for the services to place (a partial body moves only what it names)."""

    model_config = ConfigDict(extra="forbid")

    indexer: str | None = Field(None, pattern=_NAME)
    escalation: str | None = Field(None, pattern=_NAME)
    email_manager: str | None = Field(None, pattern=_NAME)

    @model_validator(mode="after")
    def _some(self) -> ServicesPlacement:
        if not self.model_dump(exclude_none=True):
            raise ValueError("name at least one of indexer, escalation, email_manager")
        return self


class LibraryChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    doc_store: UncPath | None = None
    doc_templates: UncPath | None = None
    #: Have every node probe the paths once they are set (default true).
    verify: Bool = True


class LibraryVerify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[UncPath] | None = Field(None, max_length=10)


@router.get("/replication-engine")
async def get_replication_engine(ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    """Which node holds the Replication Engine, as the agents report it now."""
    return await replication_engine.locate(ctx)


@router.put("/replication-engine")
async def put_replication_engine(body: EnginePlacement, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Move the Replication Engine: remove it (see it gone, or fence a silent node), then install."""
    async with ctx.audit.change(actor, "replication_engine.move", target=body.node) as entry:
        result = await replication_engine.move(ctx, body.node)
        entry.message = "moved" if result["changed"] else "already there"
    return (await replication_engine.locate(ctx)) | {"changed": result["changed"], "job": result["job"]}


@router.get("/services")
async def get_services(ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    return await crm_services.placement(ctx)


@router.put("/services")
async def put_services(body: ServicesPlacement, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True)
    async with ctx.audit.change(actor, "services.place", details=changes) as entry:
        result = await crm_services.place(ctx, changes)
        entry.message = "placed" if result["changed"] else "already in place"
    return result


@router.get("/library")
async def get_library(ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    return await library.get(ctx)


@router.put("/library")
async def put_library(body: LibraryChange, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Set DocStore/DocTemplates for the cluster, then (by default) have every node probe them."""
    changes = body.model_dump(exclude_unset=True, exclude={"verify"})
    if not changes:
        raise InvalidChange("name doc_store and/or doc_templates")
    async with ctx.audit.change(actor, "library.set", target="library", details=changes) as entry:
        out = await library.set_paths(ctx, changes)
        if body.verify:
            out["verification"] = await library.verify(ctx)
            entry.message = (
                "set; verified" if out["verification"]["ok"] else "set; some nodes failed the probe"
            )
    return out


@router.post("/library/verify")
async def verify_library(
    ctx: Context, actor: OperatorActor, body: LibraryVerify | None = None
) -> dict[str, Any]:
    """Every node writes, reads back and deletes a probe file; each node's result."""
    paths = body.paths if body else None
    async with ctx.audit.change(actor, "library.verify", target="library", details={"paths": paths}) as entry:
        out = await library.verify(ctx, paths)
        entry.result = "ok" if out["ok"] else "failed"
        entry.message = ", ".join(f"{n['name']}: {'ok' if n['ok'] else n['message']}" for n in out["nodes"])
    return out


@router.post("/metadata/refresh")
async def refresh_metadata(ctx: Context, actor: OperatorActor) -> dict[str, Any]:
    """Every node reloads its metadata (eware.dll and Tomcat); which nodes confirmed."""
    async with ctx.audit.change(actor, "metadata.refresh", target="cluster") as entry:
        out = await metadata.refresh(ctx)
        entry.result = "ok" if not out["failed"] else "partial"
        entry.message = "confirmed: " + (", ".join(out["confirmed"]) or "none")
    return out


@router.get("/capacity")
async def get_capacity(ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    """One DLL connection plus one Tomcat pool per web server, against the database's maximum."""
    return await capacity.capacity(ctx)
