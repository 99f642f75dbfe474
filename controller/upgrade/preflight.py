"""The preflight: everything the guide says to check before a live upgrade, changing nothing.

Each finding is ``pass``, ``warn`` or ``fail`` with its evidence. A failing finding blocks ``start``
unless the operator named it in ``overrides`` (then it shows ``overridden: true``); a finding marked
``overridable: false`` (no single database server: there is nothing to plan) cannot be overridden.

=================== ===========================================================================
finding             the guide's reason
=================== ===========================================================================
database_server     exactly one install holds the database ("Installing multi-server Sage CRM")
agents_reachable    every server is upgraded, so every agent must answer
same_version        all servers run one version before the upgrade
supported_path      "The install wizard upgrades from 7.2 or 7.3 to 2017 R1"
license             "You need a 2017 R1 license key" (checked by the database server's agent)
replication_engine  "only one single Replication Engine instance"
library             the Document Library's shared UNC path, reachable from every server
db_connections      "one DLL per web server plus one Tomcat database connection pool per web server"
dta_objects         "_dta_index_"/"_dta_stat_" objects "may cause an error during the upgrade"
backup_space        "Ensure the location ... has sufficient storage space"
sql_login           the database server's installer needs a SQL login, and it should not be ``sa``
state_database      crmcluster's own records are not in the CRM database (a restore would roll them back)
prerequisites       "Server software requirements", "Database servers", the memory rule: per server
                    (:mod:`controller.cluster_ops.prerequisites`, as ``crmcluster audit`` shows them)
=================== ===========================================================================

Operations sent here are read-only (check_license, list_dta_objects, probe_library,
check_database_rights, check_prerequisites), with op ids
``{run}.preflight.{action}.{node}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from config.secrets import redact
from config.settings import ControllerSettings
from config.vocabulary import Role
from controller.agents.client import AgentError, AgentPool
from controller.agents.follow import Polling, StepFailed, carry_out
from controller.cluster_ops import prerequisites
from controller.upgrade.model import UpgradeRequest
from controller.upgrade.plan import PlannedNode, running_services
from node_agent.protocol import (
    Action,
    DatabaseRightsResult,
    DtaObjectsResult,
    LibraryProbeResult,
    LicenseCheckResult,
    NodeStatus,
    OperationRecord,
    result_for_wire,
)

Status = Literal["pass", "warn", "fail"]
#: Room asked for on each node when the agent does not say how big its backups will be.
MIN_FREE_BYTES = 1 << 30
FINDINGS = (
    "database_server",
    "agents_reachable",
    "same_version",
    "supported_path",
    "license",
    "replication_engine",
    "library",
    "db_connections",
    "dta_objects",
    "backup_space",
    "sql_login",
    "database_rights",
    "state_database",
    "prerequisites",
)


@dataclass
class Finding:
    name: str
    status: Status
    message: str
    evidence: Any = None
    overridable: bool = True

    def as_json(self, overrides: list[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "message": redact(self.message),
            "evidence": self.evidence,
            "overridable": self.overridable,
            "overridden": self.status == "fail" and self.overridable and self.name in overrides,
        }


@dataclass
class PreflightResult:
    findings: list[dict[str, Any]]
    nodes: list[PlannedNode]
    from_version: str | None


async def _gather_limited(factories: list[Callable[[], Awaitable[Any]]], limit: int = 32) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(f: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await f()

    return await asyncio.gather(*(one(f) for f in factories))


def _rights_finding(rights: Any, node: str) -> Finding:
    """The SQL login's rights as the database server's agent read them (HAS_PERMS_BY_NAME): a
    lacking right fails (the backup, the disconnect check or the restore would); an agent that
    cannot tell is a warning."""
    if isinstance(rights, str) or rights is None:
        return Finding(
            "database_rights", "warn", f"could not check the SQL login's rights: {rights}", {"node": node}
        )
    r = rights.result_as(DatabaseRightsResult)
    ev = {"node": node, "login": r.login, "missing": r.missing}
    if r.missing:
        return Finding("database_rights", "fail", "the SQL login lacks " + "; ".join(r.missing), ev)
    return Finding("database_rights", "pass", f"the SQL login {r.login} has the rights the upgrade needs", ev)


def _license_finding(lic: LicenseCheckResult, node: str, target: str) -> Finding:
    """The license finding, saying what the agent checked (``checked``): a key the check confirmed
    for other versions only fails; a format check passes and says it was only the format."""
    ev: dict[str, Any] = {**result_for_wire(lic), "node": node}
    if not lic.valid:
        return Finding("license", "fail", f"the license key is not valid (checked: {lic.checked})", ev)
    if lic.valid_for is not None and target not in lic.valid_for:
        ev["reason"] = f"the key is not valid for {target}"
        return Finding(
            "license",
            "fail",
            f"the license key is not valid for {target}: it is for "
            + (", ".join(lic.valid_for) or "no version"),
            ev,
        )
    if lic.valid_for is None:
        return Finding(
            "license",
            "pass",
            f"the license key is accepted (checked: {lic.checked}; not confirmed for {target})",
            ev,
        )
    return Finding("license", "pass", f"the license key is valid for {target} (checked: {lic.checked})", ev)


async def run_preflight(
    *,
    run_id: str,
    request: UpgradeRequest,
    node_rows: list[dict[str, Any]],
    agents: AgentPool,
    settings: ControllerSettings,
    op_timeout: float = 60.0,
    polling: Polling | None = None,
) -> PreflightResult:
    findings: list[Finding] = []
    rows = [r for r in node_rows if r.get("agent_url")]

    # Every agent's status ------------------------------------------------------------------------
    async def status_of(row: dict[str, Any]) -> NodeStatus | str:
        try:
            return await agents.client(row["agent_url"]).status()
        except AgentError as exc:
            return str(exc)

    statuses = await _gather_limited([lambda r=r: status_of(r) for r in rows])  # type: ignore[misc]  # default-bound lambdas
    by_name: dict[str, NodeStatus] = {}
    unreachable: dict[str, str] = {}
    for row, st in zip(rows, statuses, strict=True):
        if isinstance(st, NodeStatus):
            by_name[row["name"]] = st
        else:
            unreachable[row["name"]] = st
    nodes: list[PlannedNode] = []
    for row in rows:
        st = by_name.get(row["name"])
        roles = set(row.get("roles") or [])
        if st is not None:
            roles |= {r for r in st.roles if r == Role.DATABASE.value}
        nodes.append(
            PlannedNode(
                name=row["name"],
                agent_url=row["agent_url"],
                roles=tuple(sorted(roles)),
                fqdn=row.get("fqdn"),
                version=st.version if st is not None else row.get("version"),
                web_url=st.web_url if st is not None else None,
                services=running_services(dict(st.services)) if st is not None else (),
                replication_engine=st.replication_engine
                if st is not None
                else Role.REPLICATION_ENGINE.value in roles,
            )
        )

    dbs = [n.name for n in nodes if n.is_database]
    if len(dbs) == 1:
        findings.append(Finding("database_server", "pass", f"{dbs[0]} holds the database", {"node": dbs[0]}))
    else:
        findings.append(
            Finding(
                "database_server",
                "fail",
                "exactly one server must hold the database role"
                + (f"; found {', '.join(dbs)}" if dbs else "; none"),
                {"nodes": dbs},
                overridable=False,
            )
        )
    db = next((n for n in nodes if n.name == dbs[0]), None) if len(dbs) == 1 else None

    if not rows:
        findings.append(Finding("agents_reachable", "fail", "no registered node has an agent", {}, False))
    elif unreachable:
        findings.append(
            Finding(
                "agents_reachable",
                "fail",
                f"{len(unreachable)} of {len(rows)} agents did not answer: {', '.join(sorted(unreachable))}",
                {"unreachable": unreachable},
            )
        )
    else:
        findings.append(
            Finding("agents_reachable", "pass", f"all {len(rows)} agents answered", {"nodes": len(rows)})
        )

    versions = {n: st.version for n, st in by_name.items()}
    distinct = sorted({v or "unknown" for v in versions.values()})
    from_version: str | None = distinct[0] if len(distinct) == 1 and distinct[0] != "unknown" else None
    if len(distinct) == 1:
        findings.append(
            Finding("same_version", "pass", f"every server runs {distinct[0]}", {"versions": versions})
        )
    else:
        findings.append(
            Finding(
                "same_version",
                "fail",
                f"servers run different versions: {', '.join(distinct)}",
                {"versions": versions},
            )
        )
        if db is not None and db.name in versions:
            from_version = versions[db.name]

    supported = settings.supported_upgrades.get(from_version or "", [])
    path_ev = {"from": from_version, "to": request.target_version, "supported": settings.supported_upgrades}
    if from_version is not None and request.target_version in supported:
        findings.append(
            Finding(
                "supported_path", "pass", f"{from_version} → {request.target_version} is supported", path_ev
            )
        )
    else:
        findings.append(
            Finding(
                "supported_path",
                "fail",
                f"upgrading {from_version or 'an unknown version'} to {request.target_version} "
                "is not a supported path",
                path_ev,
            )
        )

    # Read-only operations ------------------------------------------------------------------------------
    async def op(node: PlannedNode, action: Action, params: dict[str, Any]) -> OperationRecord | str:
        client = agents.client(node.agent_url)
        try:
            rec = await carry_out(
                client,
                op_id=f"{run_id}.preflight.{action.value}.{node.name}",
                action=action.value,
                params=params,
                deadline=None if op_timeout <= 0 else _now() + op_timeout,
                polling=polling,
            )
        except StepFailed as exc:
            return exc.message
        return rec

    # The read-only operations run side by side: the license and _dta_ objects on the database
    # server, the library probe on every server.
    reachable_nodes = [n for n in nodes if n.name in by_name]

    async def nothing() -> None:
        return None

    db_ok = db is not None and db.name in by_name
    lic, dta, rights, probes, prereqs = await asyncio.gather(
        op(db, Action.CHECK_LICENSE, {"license_key": request.license_key.get_secret_value()})
        if db is not None and db_ok
        else nothing(),
        op(db, Action.LIST_DTA_OBJECTS, {}) if db is not None and db_ok else nothing(),
        op(db, Action.CHECK_DATABASE_RIGHTS, {}) if db is not None and db_ok else nothing(),
        _gather_limited([lambda n=n: op(n, Action.PROBE_LIBRARY, {}) for n in reachable_nodes], limit=64),  # type: ignore[misc]  # default-bound lambdas
        _gather_limited([lambda n=n: op(n, Action.CHECK_PREREQUISITES, {}) for n in reachable_nodes]),  # type: ignore[misc]  # default-bound lambdas
    )
    if db is not None and db_ok:
        if isinstance(lic, str) or lic is None:
            findings.append(
                Finding("license", "fail", f"the license key was not accepted: {lic}", {"node": db.name})
            )
        else:
            findings.append(
                _license_finding(lic.result_as(LicenseCheckResult), db.name, request.target_version)
            )
        if isinstance(dta, str) or dta is None:
            findings.append(
                Finding("dta_objects", "warn", f"could not list _dta_ objects: {dta}", {"node": db.name})
            )
        else:
            objects = [
                o.model_dump(mode="json", by_alias=True) for o in dta.result_as(DtaObjectsResult).objects
            ]
            if objects:
                findings.append(
                    Finding(
                        "dta_objects",
                        "warn",
                        f"{len(objects)} _dta_index_/_dta_stat_ objects may break the upgrade; "
                        "delete those that cause problems and optimise the database after",
                        {"objects": objects},
                    )
                )
            else:
                findings.append(
                    Finding("dta_objects", "pass", "no _dta_index_/_dta_stat_ objects", {"objects": []})
                )
        findings.append(_rights_finding(rights, db.name))
    else:
        findings.append(Finding("license", "fail", "no reachable database server to check the license", {}))
        findings.append(
            Finding("dta_objects", "warn", "no reachable database server to list _dta_ objects", {})
        )

    holders = [n.name for n in nodes if n.name in by_name and by_name[n.name].replication_engine]
    if len(holders) == 1:
        findings.append(
            Finding(
                "replication_engine", "pass", f"one Replication Engine, on {holders[0]}", {"nodes": holders}
            )
        )
    else:
        findings.append(
            Finding(
                "replication_engine",
                "fail",
                f"{len(holders)} Replication Engines ({', '.join(holders) or 'none'}); "
                "exactly one is required",
                {"nodes": holders},
            )
        )

    lib_ev: dict[str, Any] = {}
    bad: list[str] = []
    for n, res in zip(reachable_nodes, probes, strict=True):
        if isinstance(res, str):
            lib_ev[n.name] = {"error": res}
            bad.append(n.name)
            continue
        probe = res.result_as(LibraryProbeResult)
        lib_ev[n.name] = res.result
        if not (probe.reachable and probe.writable):
            bad.append(n.name)
    if bad or not reachable_nodes:
        findings.append(
            Finding(
                "library", "fail", f"the library is not reachable from {', '.join(bad) or 'any node'}", lib_ev
            )
        )
    else:
        findings.append(Finding("library", "pass", "the library is reachable from every server", lib_ev))

    prereq = prerequisites.part(
        {n.name: prerequisites.node_report(r) for n, r in zip(reachable_nodes, prereqs, strict=True)}
    )
    findings.append(Finding("prerequisites", prereq["status"], prereq["message"], prereq["nodes"]))

    pool_sizes: dict[str, int] = getattr(settings, "tomcat_pool_sizes", {}) or {}
    required = sum(1 + pool_sizes.get(n.name, settings.tomcat_pool_size) for n in nodes)
    conn_ev = {"required": required, "max_connections": settings.max_connections, "servers": len(nodes)}
    if required > settings.max_connections:
        findings.append(
            Finding(
                "db_connections",
                "fail",
                f"{required} database connections needed (one DLL plus one Tomcat pool per server), "
                f"{settings.max_connections} available",
                conn_ev,
            )
        )
    elif required > 0.9 * settings.max_connections:
        findings.append(
            Finding(
                "db_connections",
                "warn",
                f"{required} of {settings.max_connections} connections needed",
                conn_ev,
            )
        )
    else:
        findings.append(
            Finding(
                "db_connections",
                "pass",
                f"{required} of {settings.max_connections} connections needed",
                conn_ev,
            )
        )

    space: dict[str, Any] = {}
    short: list[str] = []
    unknown: list[str] = []
    for name, st in by_name.items():
        free = st.free_disk_bytes
        space[name] = {"free_bytes": free, "needed_bytes": MIN_FREE_BYTES}
        if free is None:
            unknown.append(name)
        elif free < MIN_FREE_BYTES:
            short.append(name)
    if short:
        findings.append(
            Finding(
                "backup_space", "fail", f"not enough room for backups on {', '.join(sorted(short))}", space
            )
        )
    elif unknown:
        findings.append(
            Finding("backup_space", "warn", f"free disk unknown on {', '.join(sorted(unknown))}", space)
        )
    else:
        findings.append(Finding("backup_space", "pass", "room for the backups on every server", space))

    if request.database is None:
        findings.append(
            Finding(
                "sql_login",
                "fail",
                "no SQL login given: the database server's installer upgrades the database with it "
                "(the wizard's 'Confirm the database server name, port and SQL Server user ID')",
                None,
            )
        )
    elif request.database.user.lower() == "sa":
        findings.append(
            Finding(
                "sql_login",
                "fail",
                "the installer's SQL login is 'sa'; use a dedicated login",
                {"user": "sa"},
            )
        )
    else:
        findings.append(
            Finding(
                "sql_login", "pass", f"SQL login {request.database.user}", {"user": request.database.user}
            )
        )

    if settings.crm_url == settings.state_url:
        findings.append(
            Finding(
                "state_database",
                "warn",
                "crmcluster's state database is the CRM database: restoring the CRM database also rolls "
                "crmcluster's own records back (the controller writes the run's records again after the "
                "restore; events between the backup and the restore are lost). Give "
                "CRMCLUSTER_STATE_DB_URL a database of its own.",
                {"shared": True},
            )
        )
    else:
        findings.append(Finding("state_database", "pass", "crmcluster's records are kept apart", None))

    order = {n: i for i, n in enumerate(FINDINGS)}
    findings.sort(key=lambda f: order.get(f.name, len(order)))
    return PreflightResult(
        findings=[f.as_json(list(request.overrides)) for f in findings],
        nodes=nodes,
        from_version=from_version,
    )


def _now() -> float:
    import time

    return time.time()
