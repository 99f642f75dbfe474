"""Who is in the cluster: registering an existing web server, joining a new one the guide's way,
and removing one.

**Join** (the guide's "Installing multi-server Sage CRM", Replication-Engine-safe), one persisted
step each, stopping at the first failure and naming it:

1. disable Exchange integration on the primary (the node holding the Replication Engine);
2. install the node: the installer in add-node mode — no database, not registered, the same
   install name and database server;
3. stop the new node's Tomcat;  4. remove its Replication Engine war and folder;
5. see it gone (the agent's status no longer reports one);  6. start Tomcat;
7. enable Exchange integration on the primary;
8. add the node to ServerNames and FQServerNames;  9. put it in rotation.

If a step fails after integration was disabled, integration is enabled again on the primary (a
compensating step in the same job) and the node stays registered in ``maintenance``.

**Remove**: the node is drained first (no new logons, users leave or the drain times out), then
taken out of ServerNames/FQServerNames and forgotten. The database server, the Replication Engine
holder, the holder of a CRM service or the DTLS server cannot be removed until that is moved (409,
naming what to move and how).

**Remove with uninstall** (the guide's "Uninstalling Sage CRM manually"): after it leaves
ServerNames, the node's agent runs :data:`~node_agent.protocol.UNINSTALL_ACTIONS` in the guide's
order — CRM services and the Tomcat service removed, eware.dll unregistered, the IIS application
deleted, the install's ``Config`` and ``Mappings`` registry keys deleted, the install folder deleted
— then its status is read back (no version, no Tomcat, no CRM service) before it is forgotten. The
shared CRM database is never touched (the guide's step 4 is for a single server). Each action is
safe to run again, so a removal that stopped part-way is finished by asking for it again.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import SecretStr

from config.service_url import BadServiceUrl, check_destination, parse_service_url
from config.sysparams import ClusterConfig
from config.tls import pinned_context
from config.vocabulary import CRM_SERVICES, NodeState, Role
from controller.access.agent_tls import certificate_to_pin
from controller.agents.client import AgentError, AgentRejected
from controller.cluster_ops.drain import DRAIN_STEP, drain_step
from controller.context import ControllerContext
from controller.errors import AgentsUnavailable, ClusterBusy, InvalidChange
from controller.jobs.runner import agent_step, refuse_if_placing, run_steps
from controller.jobs.store import StepError, StepSpec
from controller.registry.cluster import read_config
from controller.registry.nodes import NodeRecord, fqdn_from_web_url
from node_agent.protocol import UNINSTALL_ACTIONS, Action, NodeStatus, RunInstallerParams, ServiceStatus

log = logging.getLogger("crmcluster.controller.cluster_ops.membership")

JOIN_STEPS = (
    "disable_exchange_integration",
    "run_installer",
    "stop_tomcat",
    "remove_replication_engine",
    "verify_replication_engine_removed",
    "start_tomcat",
    "enable_exchange_integration",
    "add_to_server_names",
    "put_in_rotation",
)


async def agent_status(
    ctx: ControllerContext, agent_url: str, *, node: str | None = None
) -> NodeStatus | None:
    """The agent's status, asked with ``node``'s token (default: the node registered at the URL)."""
    try:
        return await ctx.agents.client(agent_url, node=node).status()
    except AgentError as exc:
        log.info("agent %s: %s", agent_url, exc)
        return None


def check_agent_url(ctx: ControllerContext, agent_url: str) -> None:
    """Refuse an agent URL the controller must not call (link-local, metadata …; 422)."""
    try:
        check_destination(parse_service_url(agent_url), allow_link_local=ctx.settings.allow_link_local_agents)
    except BadServiceUrl as exc:
        raise InvalidChange(f"agent_url: {exc}", details={"agent_url": agent_url}) from None


def _check_fqdn(name: str, fqdn: str) -> None:
    ClusterConfig.checked(server_names=[name], fq_server_names=[fqdn])


async def register_existing(
    ctx: ControllerContext,
    *,
    name: str,
    agent_url: str,
    fqdn: str | None,
    roles: list[str],
    tls_fingerprint: str | None = None,
) -> tuple[NodeRecord, bool, str | None]:
    """Register an installed web server as it is (or update its registration);
    ``(node, created, certificate to pin)``.

    The agent is asked for its status when it answers: it must report the same name, and its
    observations (roles, version, web server address) are taken as a first heartbeat. An https
    agent's certificate is read first (and compared with ``tls_fingerprint``, when given): the
    status is asked over a connection that trusts that certificate only, and the caller pins it
    (:func:`pin_certificate`) once the node has its credentials.
    """
    check_agent_url(ctx, agent_url)
    if fqdn is not None:
        _check_fqdn(name, fqdn)
    pem: str | None = None
    if (
        agent_url.startswith("https://")
        and ctx.settings.agent_ca_file is None
        and not ctx.agents.injected(agent_url)
    ):
        pem = await certificate_to_pin(agent_url, tls_fingerprint, timeout=ctx.settings.agent_request_timeout)
        client = ctx.agents.one_off(agent_url, node=name, verify=pinned_context(pem))
        try:
            status: NodeStatus | None = await client.status()
        except AgentError as exc:
            log.info("agent %s: %s", agent_url, exc)
            status = None
        finally:
            await client.aclose()
    else:
        status = await agent_status(ctx, agent_url, node=name)
    if status is not None and status.name.lower() != name.lower():
        raise InvalidChange(
            f"the agent at {agent_url} is {status.name!r}, not {name!r}",
            details={"agent_url": agent_url, "agent_name": status.name},
        )
    if fqdn is None and status is not None:
        fqdn = fqdn_from_web_url(status.web_url)
    for kind in ("join", "remove"):
        if await ctx.jobs.running(kind=kind, target=name):
            raise ClusterBusy(f"a {kind} of {name} is running", details={"node": name})
    await refuse_shared_url(ctx, name, agent_url)
    rec, created = await ctx.registry.register(name=name, agent_url=agent_url, fqdn=fqdn, roles=roles)
    if status is not None:
        rec = await ctx.registry.observe(name, status, agent_url=agent_url)
    return rec, created, pem


async def pin_certificate(ctx: ControllerContext, name: str, agent_url: str, pem: str | None) -> None:
    """Pin the agent's certificate (after its credentials exist); its clients verify anew."""
    if pem is None and not agent_url.startswith("https://"):
        await ctx.node_tokens.pin(name, None)
    elif pem is not None:
        await ctx.node_tokens.pin(name, pem)
    await ctx.agents.forget(agent_url)


async def refuse_shared_url(ctx: ControllerContext, name: str, agent_url: str) -> None:
    """One agent URL, one node: the controller sends the token of the node registered at a URL."""
    for other in await ctx.registry.list_nodes():
        if other.name.lower() != name.lower() and other.agent_url == agent_url:
            raise ClusterBusy(
                f"{other.name} is registered at {agent_url}; one agent serves one node",
                details={"node": other.name, "agent_url": agent_url},
            )


async def issue_token_if_new(ctx: ControllerContext, name: str) -> str | None:
    """The node's own agent token when it has none yet (its first registration): shown once.
    Re-registering keeps the token; ``POST /nodes/{name}/token`` rotates it."""
    if not await ctx.node_tokens.has_token(name):
        return await ctx.node_tokens.issue(name)
    return None


def primary_node(nodes: list[NodeRecord]) -> NodeRecord | None:
    """The node holding the Replication Engine (the guide's primary), else the database server."""
    for n in nodes:
        if n.has_replication_engine and not n.fenced:
            return n
    for n in nodes:
        if n.is_database:
            return n
    return None


def cluster_version(nodes: list[NodeRecord]) -> str | None:
    versions = {n.version for n in nodes if n.version}
    return versions.pop() if len(versions) == 1 else None


async def start_join(
    ctx: ControllerContext,
    *,
    name: str,
    agent_url: str,
    fqdn: str | None,
    roles: list[str],
    license_key: SecretStr,
    version: str | None,
) -> dict[str, Any]:
    """Check what the join needs, register the node in ``maintenance`` and start the join job."""
    refuse_if_placing(ctx)
    check_agent_url(ctx, agent_url)
    existing = await ctx.registry.find(name)
    if existing is not None and existing.state in (NodeState.MAINTENANCE, NodeState.UPGRADING):
        raise ClusterBusy(f"node {name} is already registered ({existing.state})", details={"node": name})
    if not await ctx.node_tokens.has_token(name):
        raise InvalidChange(
            f"register {name} first (join: false): its agent needs the token registration issues "
            "(CRMCLUSTER_AGENT_TOKEN); then join it",
            details={"node": name},
        )
    if name.lower() in (s.lower() for s in (await read_config(ctx)).server_names):
        raise ClusterBusy(f"{name} is already in ServerNames", details={"node": name})
    await refuse_shared_url(ctx, name, agent_url)
    nodes = await ctx.registry.list_nodes()
    primary = primary_node(nodes)
    if primary is None:
        raise InvalidChange("no primary server (Replication Engine or database holder) is registered")
    target_version = version or cluster_version(nodes)
    if target_version is None:
        raise InvalidChange(
            "the cluster's nodes do not agree on one CRM version; give 'version' for the new node",
            details={"versions": sorted({n.version or "?" for n in nodes})},
        )
    if Role.DATABASE in roles or Role.REPLICATION_ENGINE in roles:
        raise InvalidChange("a joining web server holds neither the database nor the Replication Engine")
    try:
        status = await ctx.agents.client(agent_url, node=name).status()
    except AgentRejected as exc:
        if exc.status not in (401, 403):
            raise AgentsUnavailable(
                f"the agent at {agent_url}: {exc}", details={"agent_url": agent_url}
            ) from None
        raise InvalidChange(
            f"the agent at {agent_url} refused {name}'s token: set its CRMCLUSTER_AGENT_TOKEN to the token "
            f"registering {name} showed (or crmcluster nodes rotate-token {name})",
            details={"agent_url": agent_url, "node": name},
        ) from None
    except AgentError:
        raise AgentsUnavailable(
            f"the agent at {agent_url} does not answer", details={"agent_url": agent_url}
        ) from None
    if status.name.lower() != name.lower():
        raise InvalidChange(f"the agent at {agent_url} is {status.name!r}, not {name!r}")
    fqdn = fqdn or fqdn_from_web_url(status.web_url)
    if fqdn is None:
        raise InvalidChange("give 'fqdn' (host[:port] of the new web server)")
    _check_fqdn(name, fqdn)
    config = await read_config(ctx)
    if name.lower() in (s.lower() for s in config.server_names):
        raise ClusterBusy(f"{name} is already in ServerNames", details={"node": name})

    rec, _ = await ctx.registry.register(
        name=name, agent_url=agent_url, fqdn=fqdn, roles=roles, state=NodeState.MAINTENANCE
    )
    installer = RunInstallerParams.model_validate(
        {
            "mode": "add_node",
            "version": target_version,
            "license_key": license_key,
            "backup": False,
            "register": False,
        }
    )
    job_id = await ctx.jobs.create(
        "join",
        target=name,
        params={"agent_url": agent_url, "fqdn": fqdn, "version": target_version, "primary": primary.name},
        steps=[(primary.name if s.endswith("exchange_integration") else name, s) for s in JOIN_STEPS],
    )
    op_timeout = ctx.settings.step_timeout
    steps = [
        agent_step(ctx, primary, Action.DISABLE_EXCHANGE_INTEGRATION),
        agent_step(ctx, rec, Action.RUN_INSTALLER, installer, timeout=op_timeout),
        agent_step(ctx, rec, Action.STOP_TOMCAT),
        agent_step(ctx, rec, Action.REMOVE_REPLICATION_ENGINE),
        _verify_no_replication_engine(ctx, rec),
        agent_step(ctx, rec, Action.START_TOMCAT),
        agent_step(ctx, primary, Action.ENABLE_EXCHANGE_INTEGRATION),
        _add_to_server_names(ctx, name, fqdn),
        _put_in_rotation(ctx, rec),
    ]
    compensate = [agent_step(ctx, primary, Action.ENABLE_EXCHANGE_INTEGRATION)]

    async def run() -> None:
        async with ctx.placement_lock:
            await run_steps(ctx, job_id, steps, compensate=compensate, kind="join")

    ctx.tasks.start(f"job-{job_id}", run)
    return await ctx.jobs.get(job_id)


def _verify_no_replication_engine(ctx: ControllerContext, rec: NodeRecord) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        assert rec.agent_url
        status = await agent_status(ctx, rec.agent_url)
        if status is None:
            raise StepError(f"agent of {rec.name} does not answer")
        await ctx.registry.observe(rec.name, status, heartbeat=False)
        if status.replication_engine:
            raise StepError(f"{rec.name} still reports a Replication Engine after its removal")
        return {"replication_engine": False}

    return StepSpec(action="verify_replication_engine_removed", node=rec.name, run=run)


def _add_to_server_names(ctx: ControllerContext, name: str, fqdn: str) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        async with ctx.crm_engine.begin() as conn:
            config = await ctx.sysparams.read(conn)
            names = list(config.server_names)
            fq = list(config.fq_server_names) or [config.fq_for(s) for s in names]
            if name.lower() not in (s.lower() for s in names):
                names.append(name)
                fq.append(fqdn)
            new = await ctx.sysparams.write(conn, {"server_names": names, "fq_server_names": fq})
        return {"server_names": new.server_names, "fq_server_names": new.fq_server_names}

    return StepSpec(action="add_to_server_names", node=name, run=run)


def _put_in_rotation(ctx: ControllerContext, rec: NodeRecord) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        assert rec.agent_url
        status = await agent_status(ctx, rec.agent_url)
        if status is not None:
            await ctx.registry.observe(rec.name, status)
        node = await ctx.registry.release(rec.name, heartbeat_timeout=ctx.settings.heartbeat_timeout)
        return {"state": node.state}

    return StepSpec(action="put_in_rotation", node=rec.name, run=run)


# Removing a node ----------------------------------------------------------------------------------
#: What to do first, per role a node holds, for the 409 that refuses its removal.
MOVE_FIRST: dict[str, str] = {
    "database": "it is the database server (the install that holds the database): it stays",
    "replication_engine": (
        'move the Replication Engine first (PUT /api/v1/replication-engine {"node": OTHER}, '
        "crmcluster replication-engine move OTHER)"
    ),
    "dtls": 'name another DTLS server first (PUT /api/v1/cluster/config {"dtls_server_name": OTHER})',
}
for _service in CRM_SERVICES:
    MOVE_FIRST[_service] = (
        f"the {_service.replace('_', ' ').title()} service runs once in the cluster: move it first "
        f'(PUT /api/v1/services {{"{_service}": OTHER}}, crmcluster services set {_service}=OTHER)'
    )


def _held_roles(rec: NodeRecord, config: ClusterConfig) -> list[str]:
    held = []
    if rec.is_database:
        held.append("database")
    if rec.has_replication_engine and not rec.fenced:
        held.append("replication_engine")
    held += [s for s in CRM_SERVICES if rec.has_service(s)]
    if config.dtls_server_name and config.dtls_server_name.lower() == rec.name.lower():
        held.append("dtls")
    return held


async def start_remove(
    ctx: ControllerContext, name: str, *, drain_timeout: float | None, uninstall: bool = False
) -> dict[str, Any]:
    refuse_if_placing(ctx)
    rec = await ctx.registry.get(name)
    config = await read_config(ctx)
    held = _held_roles(rec, config)
    if held:
        raise ClusterBusy(
            f"{name} cannot be removed: " + "; ".join(MOVE_FIRST[r] for r in held),
            details={"node": name, "roles": held, "move_first": {r: MOVE_FIRST[r] for r in held}},
        )
    if uninstall and not rec.agent_url:
        raise InvalidChange(f"{name} has no agent to uninstall it", details={"node": name})
    if rec.state == NodeState.UPGRADING:
        raise ClusterBusy(f"node {name} is being upgraded", details={"node": name})
    for kind in ("join", "remove"):
        if await ctx.jobs.running(kind=kind, target=name):
            raise ClusterBusy(f"a {kind} of {name} is already running", details={"node": name})
    wait = ctx.settings.drain_timeout if drain_timeout is None else drain_timeout
    if rec.state not in (NodeState.DRAINING, NodeState.MAINTENANCE):
        await ctx.registry.hold(name, NodeState.DRAINING)
    uninstall_steps: list[StepSpec] = []
    if uninstall:
        uninstall_steps = [agent_step(ctx, rec, action) for action in UNINSTALL_ACTIONS]
        uninstall_steps.append(_verify_uninstalled(ctx, rec))
    steps = [
        _drain_if_needed(ctx, name, timeout=wait),
        _remove_from_server_names(ctx, name),
        *uninstall_steps,
        _forget(ctx, name),
    ]
    job_id = await ctx.jobs.create(
        "remove",
        target=name,
        params={"drain_timeout": wait, "uninstall": uninstall},
        steps=[(name, spec.action) for spec in steps],
    )

    async def run() -> None:
        async with ctx.placement_lock:
            await run_steps(ctx, job_id, steps, kind="remove")

    ctx.tasks.start(f"job-{job_id}", run)
    return await ctx.jobs.get(job_id)


def _drain_if_needed(ctx: ControllerContext, name: str, *, timeout: float) -> StepSpec:
    inner = drain_step(ctx, name, timeout=timeout)

    async def run(op_id: str) -> dict[str, Any] | None:
        rec = await ctx.registry.get(name)
        if rec.state == NodeState.MAINTENANCE:
            return {"logged_on": await ctx.sessions.count(name), "already_drained": True}
        result = await inner.run(op_id)
        if result and result.get("undrained"):
            raise StepError(f"{name} was undrained while it was being removed")
        return result

    return StepSpec(action=DRAIN_STEP, node=name, run=run)


def _remove_from_server_names(ctx: ControllerContext, name: str) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        async with ctx.crm_engine.begin() as conn:
            config = await ctx.sysparams.read(conn)
            pairs = [(s, config.fq_for(s)) for s in config.server_names if s.lower() != name.lower()]
            changes: dict[str, Any] = {"server_names": [p[0] for p in pairs]}
            if config.fq_server_names:
                changes["fq_server_names"] = [p[1] for p in pairs]
            new = await ctx.sysparams.write(conn, changes)
        return {"server_names": new.server_names}

    return StepSpec(action="remove_from_server_names", node=name, run=run)


def _verify_uninstalled(ctx: ControllerContext, rec: NodeRecord) -> StepSpec:
    """Read the agent's status back: no Sage CRM version, no Tomcat service, no CRM service left."""

    async def run(_op_id: str) -> dict[str, Any]:
        assert rec.agent_url
        status = await agent_status(ctx, rec.agent_url)
        if status is None:
            raise StepError(f"agent of {rec.name} does not answer: cannot confirm the uninstall")
        left = [s for s, st in status.services.items() if st not in (ServiceStatus.NOT_INSTALLED,)]
        problems = []
        if status.version:
            problems.append(f"Sage CRM {status.version} is still reported")
        if status.tomcat != ServiceStatus.NOT_INSTALLED:
            problems.append(f"the Tomcat service is {status.tomcat.value}")
        if left:
            problems.append("CRM services still installed: " + ", ".join(sorted(left)))
        if status.replication_engine:
            problems.append("a Replication Engine is still there")
        if problems:
            raise StepError(f"{rec.name} is not uninstalled: " + "; ".join(problems))
        return {"version": None, "tomcat": status.tomcat.value, "services": [], "reboot": "recommended"}

    return StepSpec(action="verify_uninstalled", node=rec.name, run=run)


def _forget(ctx: ControllerContext, name: str) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        await ctx.registry.remove(name)
        await ctx.node_tokens.forget(name)  # its token dies with it
        return {"removed": name}

    return StepSpec(action="forget_node", node=name, run=run)
