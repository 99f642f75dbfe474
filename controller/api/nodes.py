"""Nodes: register, join, remove, drain/undrain; and the jobs that carry multi-step changes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from config.api_errors import API_ERROR_RESPONSES
from config.input_types import Bool
from config.service_url import parse_service_url
from config.tls import normal_fingerprint
from config.vocabulary import Role
from controller.api.deps import AdminActor, Context, OperatorActor, ViewerActor
from controller.cluster_ops import drain, membership
from controller.errors import InvalidChange
from node_agent.protocol import Version

router = APIRouter(prefix="/api/v1", tags=["nodes"], responses=API_ERROR_RESPONSES)

NodeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")]


class NodeRegistration(BaseModel):
    """``join: false`` registers an installed web server as it is; ``join: true`` adds a new one
    the guide's way (needs the ``license_key``; ``version`` defaults to the cluster's)."""

    model_config = ConfigDict(extra="forbid")

    name: NodeName
    agent_url: str = Field(min_length=8, max_length=500)
    fqdn: str | None = Field(None, max_length=255)
    roles: list[Role] = Field(default_factory=list, max_length=10)
    join: Bool = False
    license_key: SecretStr | None = None
    version: Version | None = None
    #: The SHA-256 fingerprint of an https agent's certificate (``crmcluster tls new-cert`` prints
    #: it): the certificate the agent presents must have it, and is pinned. Unset: pinned as
    #: presented (trust on first use), unless the controller has CRMCLUSTER_AGENT_CA_FILE.
    tls_fingerprint: str | None = Field(None, max_length=200)

    @field_validator("tls_fingerprint")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        return normal_fingerprint(v) if v else None

    @field_validator("agent_url")
    @classmethod
    def _url(cls, v: str) -> str:
        """Parsed into scheme, host and port (config.service_url); written back in normal form."""
        return str(parse_service_url(v))


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Seconds to wait for logged-on users to leave (default: the controller's drain_timeout).
    timeout: float | None = Field(None, ge=0, le=7 * 24 * 3600)


@router.get("/nodes")
async def list_nodes(ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    return {"nodes": [n.public() for n in await ctx.registry.list_nodes()]}


@router.get("/nodes/{name}")
async def get_node(name: str, ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    rec = await ctx.registry.get(name)
    return rec.public() | {"observed": rec.observed}


@router.post("/nodes", status_code=201)
async def add_node(
    body: NodeRegistration, ctx: Context, actor: AdminActor, response: Response
) -> dict[str, Any]:
    """Register (``join: false``: 201 new, 200 updated) or join (``join: true``: 202 with the job)."""
    roles = [r.value for r in body.roles]
    details = body.model_dump(mode="json", exclude={"license_key"})
    if not body.join:
        async with ctx.audit.change(actor, "nodes.register", target=body.name, details=details) as entry:
            rec, created, pem = await membership.register_existing(
                ctx,
                name=body.name,
                agent_url=body.agent_url,
                fqdn=body.fqdn,
                roles=roles,
                tls_fingerprint=body.tls_fingerprint,
            )
            token = await membership.issue_token_if_new(ctx, body.name)
            await membership.pin_certificate(ctx, body.name, body.agent_url, pem)
            entry.message = ("registered" if created else "registration updated") + (
                "; agent token issued" if token else ""
            )
        response.status_code = 201 if created else 200
        # Shown this once: set it as CRMCLUSTER_AGENT_TOKEN on the node's agent.
        return rec.public() | ({"agent_token": token} if token else {})
    if body.license_key is None:
        raise InvalidChange("license_key: required to join a web server (the installer asks for it)")
    async with ctx.audit.change(actor, "nodes.join", target=body.name, details=details) as entry:
        job = await membership.start_join(
            ctx,
            name=body.name,
            agent_url=body.agent_url,
            fqdn=body.fqdn,
            roles=roles,
            license_key=body.license_key,
            version=body.version,
        )
        entry.message = f"join started as job {job['id']}"
    response.status_code = 202
    return job


@router.post("/nodes/{name}/token")
async def rotate_node_token(
    name: Annotated[str, Path(max_length=63)], ctx: Context, actor: AdminActor
) -> dict[str, Any]:
    """A new agent token for the node (the old one stops working now); shown this once."""
    async with ctx.audit.change(actor, "nodes.rotate_token", target=name) as entry:
        await ctx.registry.get(name)
        token = await ctx.node_tokens.issue(name)
        entry.message = "new agent token issued; the old one no longer works"
    return {"name": name, "agent_token": token}


@router.delete("/nodes/{name}", status_code=202)
async def remove_node(
    name: str,
    ctx: Context,
    actor: AdminActor,
    drain_timeout: Annotated[float | None, Query(ge=0, le=7 * 24 * 3600)] = None,
    uninstall: Annotated[
        bool, Query(description="Then uninstall Sage CRM from it, as the guide's manual uninstall")
    ] = False,
) -> dict[str, Any]:
    """Drain the node, take it out of ServerNames/FQServerNames and forget it (202 with the job).

    ``uninstall=true``: between the two, its agent uninstalls Sage CRM the guide's manual way (CRM
    and Tomcat services, eware.dll, the IIS application, the registry keys, the install folder;
    never the shared database). 409 naming what to move first for the database server, the
    Replication Engine holder, a CRM service's server or the DTLS server."""
    details = {"drain_timeout": drain_timeout, "uninstall": uninstall}
    async with ctx.audit.change(actor, "nodes.remove", target=name, details=details) as e:
        job = await membership.start_remove(ctx, name, drain_timeout=drain_timeout, uninstall=uninstall)
        e.message = f"removal{' and uninstall' if uninstall else ''} started as job {job['id']}"
    return job


@router.post("/nodes/{name}/drain", status_code=202)
async def drain_node(
    name: str, ctx: Context, actor: OperatorActor, body: DrainRequest | None = None
) -> dict[str, Any]:
    """Stop new logons to the node now; the job completes when its users reach zero or time out."""
    timeout = body.timeout if body else None
    async with ctx.audit.change(actor, "nodes.drain", target=name, details={"timeout": timeout}) as e:
        job = await drain.start_drain(ctx, name, timeout=timeout)
        e.message = f"draining as job {job['id']}"
    return job


@router.post("/nodes/{name}/undrain")
async def undrain_node(name: str, ctx: Context, actor: OperatorActor) -> dict[str, Any]:
    async with ctx.audit.change(actor, "nodes.undrain", target=name) as e:
        rec = await drain.undrain(ctx, name)
        e.message = f"now {rec.state}"
    return rec.public()
