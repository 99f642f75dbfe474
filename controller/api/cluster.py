"""``GET /cluster``, ``PUT /cluster/config``, ``GET /cluster/audit``, ``GET|PUT /https`` and the
agents' heartbeat."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from config.api_errors import API_ERROR_RESPONSES
from config.database import unavailable_errors
from config.input_types import Bool, Port
from controller.api.deps import AdminActor, AgentAuth, Context, OperatorActor, ViewerActor
from controller.cluster_ops import cluster_audit, https, library
from controller.registry import cluster, heartbeats, invariants
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Heartbeat, NodeAssignment, UncPath

router = APIRouter(prefix="/api/v1", tags=["cluster"], responses=API_ERROR_RESPONSES)


class ConfigChange(BaseModel):
    """A partial change of the multi-server settings: only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")

    server_names: list[Annotated[str, Field(max_length=63)]] | None = Field(None, max_length=100)
    fq_server_names: list[Annotated[str, Field(max_length=261)]] | None = Field(None, max_length=100)
    do_load_balancing: Bool | None = None
    dtls_server_name: str | None = Field(None, max_length=63)
    http_port: Port | None = None
    outlook_port: Port | None = None
    doc_store: UncPath | None = None
    doc_templates: UncPath | None = None


@router.get("/cluster")
async def get_cluster(ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    """The registered nodes, the multi-server settings, and every violated invariant."""
    return await cluster.view(ctx)


@router.get("/cluster/audit")
async def get_audit(ctx: Context, _actor: OperatorActor) -> dict[str, Any]:
    """The cluster read against the guide, changing nothing: each server's prerequisites (IIS role
    services, parent paths, other websites, SQL Server's TCP/IP and collation, memory, free disk),
    each check with the command that read it. Not the audit trail (``GET /audit``)."""
    return await cluster_audit.run(ctx)


class HttpsChange(BaseModel):
    """Switch the cluster to HTTPS (``enabled``) on ``port`` (default 443; back to HTTP: 80);
    ``outlook_port`` defaults to ``port``."""

    model_config = ConfigDict(extra="forbid")

    enabled: Bool
    port: Port | None = None
    outlook_port: Port | None = None


@router.get("/https")
async def get_https(ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    """Whether users reach the servers over HTTPS, HTTPPort, OutlookPort, each server's address."""
    return https.view(await cluster.read_config(ctx))


@router.put("/https")
async def put_https(body: HttpsChange, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Switch to HTTPS (names checked, every server's binding checked, then HTTPPort, OutlookPort
    and crmcluster_UseHTTPS written) or back to HTTP; the balancer follows without a restart."""
    details = body.model_dump()
    async with ctx.audit.change(actor, "https.set", target="Custom_SysParams", details=details) as entry:
        answer = await https.switch(ctx, enabled=body.enabled, port=body.port, outlook_port=body.outlook_port)
        entry.message = f"HTTPS {'on' if body.enabled else 'off'}, HTTPPort {answer['http_port']}"
    return answer


@router.put("/cluster/config")
async def put_config(body: ConfigChange, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Change the multi-server settings in Custom_SysParams (validated against the whole config)."""
    changes = body.model_dump(exclude_unset=True)
    async with ctx.audit.change(actor, "cluster.config", target="Custom_SysParams", details=changes) as entry:
        with unavailable_errors("CRM database"):
            async with ctx.crm_engine.begin() as conn:
                paths = [changes.get("doc_store"), changes.get("doc_templates")]
                library.check_on_shares(ctx, await ctx.sysparams.read(conn), paths)
                config = await ctx.sysparams.write(conn, changes)
        entry.message = "changed " + ", ".join(sorted(changes)) if changes else "nothing to change"
    warnings = invariants.check(await ctx.registry.list_nodes(), config)
    return {"sysparams": config.model_dump(), "warnings": invariants.as_json(warnings)}


def assignment(rec: NodeRecord) -> NodeAssignment:
    return NodeAssignment(state=rec.state, weight=min(max(rec.weight, 0.0), 1.0), fenced=rec.fenced)


@router.post("/agents/{name}/heartbeat", response_model=NodeAssignment)
async def heartbeat(name: str, body: Heartbeat, ctx: Context, agent: AgentAuth) -> NodeAssignment:
    """An agent's heartbeat (its own node's token only): records its observed status; answers the
    state the controller holds. The ``agent_url`` it advertises is never stored — the controller
    keeps calling the registered one; a different one shows as a warning on ``GET /cluster``."""
    assert agent.node is not None  # AgentAuth: the token's node is the one in the path
    rec = await heartbeats.receive(ctx, agent.node, body.model_copy(update={"agent_url": None}))
    heartbeats.note_advertised_url(ctx, rec, body.agent_url)
    return assignment(rec)


@router.get("/agents/{name}/state", response_model=NodeAssignment)
async def agent_state(name: str, ctx: Context, _auth: AgentAuth) -> NodeAssignment:
    """The state the controller holds for the agent's node (its agent-check answers from it)."""
    return assignment(await ctx.registry.get(name))
