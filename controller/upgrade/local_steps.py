"""Steps the controller carries out itself: telling and locking out users, checking that servers are
disconnected, keeping one Replication Engine, smoke checks, putting the balancer back in service
and verifying a restore.

Each returns ``(evidence, message)`` or raises :class:`~controller.agents.follow.StepFailed`.
They are safe to run again: sub-operations they send to agents carry op ids derived from the
step's (``{step op id}.{purpose}``), so a restarted controller finds them instead of resending.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from config.vocabulary import NodeState
from controller.agents.client import AgentError
from controller.agents.follow import StepFailed
from controller.upgrade.evidence import host_matches, sessions_by_host
from controller.upgrade.model import Local, Phase, Step
from controller.upgrade.run_state import RunState, sleep_until, sub_op
from node_agent.protocol import Action, DatabaseSessionsResult, LibraryProbeResult

Outcome = tuple[dict[str, Any] | None, str | None]


async def perform(ex: RunState, step: Step, deadline: float | None) -> Outcome:
    action = Local(step.action)
    if action == Local.SIGNOFF:  # approved by the route; reaching here means it was
        return step.result, step.message or "signed off"
    if action == Local.TELL_USERS:
        return await tell_users(ex, step)
    if action == Local.LOCK_OUT:
        await ex.store.set_node_states(ex.nodes, NodeState.MAINTENANCE.value)
        if "lockout_started_at" not in ex.run.context or step.phase == "restore":
            await ex.update_context(lockout_started_at=ex.now().isoformat() + "Z")
        return {"nodes": sorted(ex.nodes)}, f"users locked out of {len(ex.nodes)} servers (maintenance)"
    if action == Local.VERIFY_DISCONNECTED:
        return await verify_disconnected(ex, step, deadline)
    if action == Local.ONE_REPLICATION_ENGINE:
        return await one_replication_engine(ex, step)
    if action == Local.SMOKE_CHECK:
        return await smoke_check(ex, step)
    if action == Local.ACCEPTANCE:  # accepted by the route; reaching here means it was
        return step.result, step.message or "accepted"
    if action == Local.RETURN_TO_SERVICE:
        return await return_to_service(ex, step)
    if action == Local.VERIFY_SERVICE:
        return await verify_service(ex, step)
    raise StepFailed(f"unknown local step {step.action}")  # pragma: no cover - Local is exhaustive


async def return_to_service(ex: RunState, step: Step) -> Outcome:
    """Balancer ``up`` on every server: users return. After an upgrade this is ``returned_at``: from
    then on what users write is in the new database only, and nothing is restored on its own."""
    await ex.store.set_node_states(ex.nodes, NodeState.UP.value)
    now = ex.now().isoformat() + "Z"
    changes: dict[str, Any] = {"lockout_ended_at": now}
    if step.phase == Phase.AFTER.value and "returned_at" not in ex.run.context:
        changes["returned_at"] = now
    await ex.update_context(**changes)
    return {"nodes": sorted(ex.nodes), "at": now}, "balancer back in service on every server"


async def verify_service(ex: RunState, step: Step) -> Outcome:
    """With users back: every server ``up`` for the balancer and answering its logon page."""
    states = {str(r["name"]): str(r["state"]) for r in await ex.store.node_rows() if r["name"] in ex.nodes}
    served = await logons_served(ex, step)
    problems = [f"{n} is {st}" for n, st in sorted(states.items()) if st != NodeState.UP.value]
    problems += [f"{n}: logon not served ({why})" for n, why in sorted(served.items()) if why != "ok"]
    ev = {"states": states, "logons": served}
    if problems:
        raise StepFailed("users are back but " + "; ".join(problems), evidence=ev)
    return ev, f"users back: {len(served)} servers up and serving logons"


async def tell_users(ex: RunState, step: Step) -> Outcome:
    """Users told: the balancer stops sending new logons (``draining``); then a grace period."""

    await ex.store.set_node_states(ex.nodes, NodeState.DRAINING.value)
    grace = float(step.params.get("grace") or 0)
    until = (step.result or {}).get("until")
    if until is None:
        until = ex.epoch_now() + grace
        step.result = {"until": until, "grace": grace}
        await ex.store.save_step(step)  # the grace period's end survives a restart
    await ex.emit("decision", {"decision": "users_told", "grace_seconds": grace})
    await sleep_until(ex, float(until))
    return {"grace_seconds": grace}, f"users told; {grace:.0f}s grace period over"


async def verify_disconnected(ex: RunState, step: Step, deadline: float | None) -> Outcome:
    """The guide: "ensure all servers ... are disconnected from the database" — asked of the
    database itself, until none is left or the step times out. Every host is checked, the database
    server's own IIS, Tomcat and services too: only the upgrade's own connection (the one asking,
    which the agent leaves out) may remain."""
    assert step.node is not None
    hosts = [str(h) for h in step.params.get("hosts", [])]
    attempt = 0
    while True:
        rec = await sub_op(ex, step, step.node, f"sessions{attempt}", Action.DATABASE_SESSIONS.value, {})
        sessions = sessions_by_host(rec.result_as(DatabaseSessionsResult))
        left = {
            h: n
            for h, n in sessions.items()
            if n > 0
            and any(
                host_matches(h, node, ex.nodes[node].fqdn if node in ex.nodes else None) for node in hosts
            )
        }
        if not left:
            return {
                "sessions": sessions,
                "checked": hosts,
            }, f"no database sessions from any of the {len(hosts)} servers (the database server's too)"
        if deadline is not None and ex.epoch_now() + ex.session_wait >= deadline:
            raise StepFailed(
                "still connected to the database: " + ", ".join(f"{h} ({n})" for h, n in sorted(left.items()))
            )
        attempt += 1
        await asyncio.sleep(ex.session_wait)


async def one_replication_engine(ex: RunState, step: Step) -> Outcome:
    """Exactly one Replication Engine: removed wherever the upgrade put one back, kept on its holder."""
    holder = step.params.get("holder") or (ex.db.name if ex.db else None)
    present: dict[str, bool] = {}
    for name, node in ex.nodes.items():
        try:
            present[name] = (await ex.agents.client(node.agent_url).status()).replication_engine
        except AgentError as exc:
            raise StepFailed(f"{name}: agent did not answer ({exc})") from exc
    removed: list[str] = []
    for name, has in present.items():
        if has and name != holder:
            touched = sorted({*ex.run.context.get("touched", []), name})
            await ex.update_context(touched=touched)
            await sub_op(ex, step, name, f"remove.{name}", Action.REMOVE_REPLICATION_ENGINE.value, {})
            removed.append(name)
    installed = False
    if holder and not present.get(holder):
        await sub_op(ex, step, holder, f"install.{holder}", Action.INSTALL_REPLICATION_ENGINE.value, {})
        installed = True
    ev = {"holder": holder, "removed_from": removed, "installed": installed, "before": present}
    return ev, f"one Replication Engine, on {holder}" + (
        f"; removed from {', '.join(removed)}" if removed else ""
    )


async def _http_ok(ex: RunState, url: str, *, method: str = "GET", data: dict[str, str] | None = None) -> str:
    try:
        async with httpx.AsyncClient(transport=ex.web_transport_for(url), timeout=10.0) as client:
            resp = await client.request(method, url, data=data, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})"
    return "ok" if resp.status_code < 500 else f"HTTP {resp.status_code}"


async def sdata_answer(ex: RunState, web_url: str) -> dict[str, Any]:
    """Tomcat's own answer (``/sdata/``): ``ok`` or what went wrong, and the version it says it
    serves when it says one."""
    url = f"{web_url.rstrip('/')}/sdata/"
    try:
        async with httpx.AsyncClient(transport=ex.web_transport_for(url), timeout=10.0) as client:
            resp = await client.get(url, follow_redirects=False)
    except httpx.HTTPError as exc:
        return {"answer": f"no answer ({type(exc).__name__})", "version": None}
    if resp.status_code >= 500:
        return {"answer": f"HTTP {resp.status_code}", "version": None}
    try:
        body = resp.json()
    except ValueError:
        body = None
    version = body.get("version") if isinstance(body, dict) else None
    return {"answer": "ok", "version": str(version) if version is not None else None}


def version_differences(
    name: str, want: str | None, *, tomcat: str | None, sdata: dict[str, Any] | None, services: dict[str, str]
) -> list[str]:
    """What of a server is not at ``want``: the web apps Tomcat serves (as the agent reads them and
    as Tomcat answers) and each CRM service's program."""
    diffs: list[str] = []
    if tomcat is not None and tomcat != want:
        diffs.append(f"{name}: Tomcat's web apps are {tomcat}, not {want}")
    if sdata is not None:
        if sdata["answer"] != "ok":
            diffs.append(f"{name}: Tomcat (SData) {sdata['answer']}")
        elif sdata.get("version") is not None and sdata["version"] != want:
            diffs.append(f"{name}: Tomcat answers {sdata['version']}, not {want}")
    diffs += [
        f"{name}: the {svc} service's program is {v}, not {want}"
        for svc, v in sorted(services.items())
        if v != want
    ]
    return diffs


def _logon_url(web_url: str, install: str) -> str:
    return f"{web_url.rstrip('/')}/{install.lower()}/eware.dll/Logon"


async def logons_served(ex: RunState, step: Step) -> dict[str, str]:
    """Each server's logon page, asked over HTTP (``ok`` or what went wrong)."""
    out: dict[str, str] = {}
    for name in ex.nodes:
        web_url, install = await _web_of(ex, name)
        if not web_url:
            out[name] = "ok" if _warmed_up(ex, name) else "no web address reported"
            continue
        out[name] = await _http_ok(ex, _logon_url(web_url, install))
    return out


def _warmed_up(ex: RunState, node: str) -> bool:
    return any(s.node == node and s.action == Action.WARMUP_LOGON.value and s.status.done for s in ex.steps)


async def _web_of(ex: RunState, name: str) -> tuple[str | None, str]:
    node = ex.nodes[name]
    try:
        st = await ex.agents.client(node.agent_url).status()
    except AgentError:
        return node.web_url, ex.run.context.get("install_name") or "CRM"
    return st.web_url or node.web_url, st.install_name


async def smoke_check(ex: RunState, step: Step) -> Outcome:
    """DESIGN.md's smoke checks on one server: version reported, IIS and Tomcat running, the logon
    page and SData answering, the library reachable (the sample is read by the records comparison)."""
    assert step.node is not None
    node = ex.nodes[step.node]
    problems: list[str] = []
    ev: dict[str, Any] = {}
    try:
        st = await ex.agents.client(node.agent_url).status()
    except AgentError as exc:
        raise StepFailed(f"{step.node}: agent did not answer ({exc})") from exc
    want = step.params.get("version") or ex.run.target_version
    ev.update(version=st.version, web=st.web.value, tomcat=st.tomcat.value)
    if st.version != want:
        problems.append(f"version {st.version}, expected {want}")
    if st.web.value != "running":
        problems.append(f"IIS {st.web.value}")
    if st.tomcat.value != "running":
        problems.append(f"Tomcat {st.tomcat.value}")
    ev.update(tomcat_version=st.tomcat_version, service_versions=dict(st.service_versions))
    if st.web_url:
        ev["logon"] = await _http_ok(ex, _logon_url(st.web_url, st.install_name))
        sdata = await sdata_answer(ex, st.web_url)
        ev["sdata"] = sdata["answer"]
        ev["sdata_version"] = sdata["version"]
        if ev["logon"] != "ok":
            problems.append(f"logon page: {ev['logon']}")
    else:
        sdata = None
        ev["logon"] = "checked by the warm-up logon (no web address reported)"
    problems += [
        d.removeprefix(f"{step.node}: ")
        for d in version_differences(
            step.node, want, tomcat=st.tomcat_version, sdata=sdata, services=dict(st.service_versions)
        )
    ]
    probe = await sub_op(ex, step, step.node, "library", Action.PROBE_LIBRARY.value, {})
    library = probe.result_as(LibraryProbeResult)
    ev["library"] = probe.result
    if not library.reachable:
        problems.append(f"library not reachable ({library.message or library.path})")
    elif not library.writable:
        problems.append(f"library not writable ({library.message or library.path})")
    if problems:
        raise StepFailed(f"smoke check of {step.node}: " + "; ".join(problems))
    return ev, f"{step.node}: {st.version}, logon and SData answer, library reachable"
