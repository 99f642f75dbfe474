"""The upgrade plan: the guide's live upgrade as an ordered list of steps in waves.

The order is DESIGN.md "The upgrade, in the guide's order" (the guide's "Upgrading multi-server
Sage CRM": back up, then "perform a live upgrade on each Sage CRM server, starting with the
database server"):

====== ============================================================================================
phase  steps
====== ============================================================================================
freeze sign-off gate (if asked); users told (balancer ``draining``, grace period); locked out
       (``maintenance``); every server — the database server too — disconnected (IIS, Tomcat,
       CRM services stopped), then verified by the database's own sessions: none from any host
       but the upgrade's own connection
backup database and customized views (database server); program files and registry (every server)
base-  20 company records fingerprinted (the checklist's "random sampling of 20 company records")
line
db     triggers disabled (if asked); the installer with the wizard's own backup, registered once;
server its upgrade log read
others in batches of ``batch_size``: the installer ("backup is not required", not registered), log
after  triggers enabled; one Replication Engine; IIS/Tomcat/services started, metadata reloaded and
       a warm-up logon on every server; smoke checks; the 20 records compared; post-upgrade
       backups — all while users are still out; the acceptance hold (if asked, the default); then
       users return (balancer back in service) and every server is seen serving
====== ============================================================================================

A *wave* is a set of steps run at the same time, one lane (sequence) per node; the next wave starts
when every step before it has succeeded. The plan is fixed at planning time from the nodes as the
preflight saw them; the restore steps (:mod:`controller.upgrade.restore`) are added on failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from config.vocabulary import CRM_SERVICES, Role
from controller.upgrade.model import Local, Phase, Step
from node_agent.protocol import Action

SECRET = "$secret"  # noqa: S105 - the placeholder key, not a secret


@dataclass(frozen=True)
class PlannedNode:
    """A node as the preflight saw it (kept in the run's context as JSON)."""

    name: str
    agent_url: str
    roles: tuple[str, ...] = ()
    fqdn: str | None = None
    version: str | None = None
    web_url: str | None = None
    #: CRM services running before the upgrade (started again after it, or after a restore).
    services: tuple[str, ...] = ()
    replication_engine: bool = False

    @property
    def is_database(self) -> bool:
        return Role.DATABASE.value in self.roles

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "agent_url": self.agent_url,
            "roles": list(self.roles),
            "fqdn": self.fqdn,
            "version": self.version,
            "web_url": self.web_url,
            "services": list(self.services),
            "replication_engine": self.replication_engine,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlannedNode:
        return cls(
            name=d["name"],
            agent_url=d["agent_url"],
            roles=tuple(d.get("roles") or ()),
            fqdn=d.get("fqdn"),
            version=d.get("version"),
            web_url=d.get("web_url"),
            services=tuple(d.get("services") or ()),
            replication_engine=bool(d.get("replication_engine")),
        )


def database_server(nodes: Iterable[PlannedNode]) -> PlannedNode | None:
    dbs = [n for n in nodes if n.is_database]
    return dbs[0] if len(dbs) == 1 else None


def batches(items: list[PlannedNode], size: int) -> list[list[PlannedNode]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class StepBuilder:
    """Numbers steps and waves as they are added."""

    run_id: str
    seq: int = 0
    wave: int = 0
    steps: list[Step] = field(default_factory=list)
    timeouts: dict[str, float] = field(default_factory=dict)
    default_timeout: float = 900.0

    def next_wave(self) -> None:
        if self.steps and self.steps[-1].wave == self.wave:
            self.wave += 1

    def add(
        self,
        phase: Phase,
        node: str | None,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Step:
        self.seq += 1
        step = Step(
            run_id=self.run_id,
            id=f"{self.seq}-{action}" + (f"-{node}" if node else ""),
            seq=self.seq,
            wave=self.wave,
            phase=phase.value,
            node=node,
            action=action,
            params=params or {},
            timeout=timeout if timeout is not None else self.timeouts.get(action, self.default_timeout),
        )
        self.steps.append(step)
        return step

    def lane(self, phase: Phase, node: str, actions: Iterable[tuple[str, dict[str, Any] | None]]) -> None:
        for action, params in actions:
            self.add(phase, node, action, params)


def _dest(options: dict[str, Any], run_id: str, node: str, kind: str) -> dict[str, Any]:
    loc = options.get("backup_location")
    return {"destination": f"{loc}/{run_id}/{node}/{kind}"} if loc else {}


def stop_actions(node: PlannedNode, *, web: bool) -> list[tuple[str, dict[str, Any] | None]]:
    acts: list[tuple[str, dict[str, Any] | None]] = []
    if web:
        acts += [(Action.STOP_WEB.value, None), (Action.STOP_TOMCAT.value, None)]
    acts += [(Action.STOP_SERVICE.value, {"service": s}) for s in node.services]
    return acts


def start_actions(node: PlannedNode) -> list[tuple[str, dict[str, Any] | None]]:
    return [
        (Action.START_WEB.value, None),
        (Action.START_TOMCAT.value, None),
        *[(Action.START_SERVICE.value, {"service": s}) for s in node.services],
    ]


def installer_params(*, options: dict[str, Any], target: str, run_id: str, database: bool) -> dict[str, Any]:
    """The installer's params with the license key and password as placeholders (filled at send)."""
    params: dict[str, Any] = {"mode": "upgrade", "version": target, "license_key": {SECRET: "license_key"}}
    if database:
        params["backup"] = True
        if options.get("backup_location"):
            params["backup_location"] = f"{options['backup_location']}/{run_id}/wizard"
        params["register"] = True
        login = options.get("database")
        if login:
            params["database"] = {**login, "password": {SECRET: "database_password"}}
    else:
        params["backup"] = False  # the guide: "Backup is not Required"
        params["register"] = False  # the guide: "Do not register these web servers"
    return params


def plan_upgrade(
    *,
    run_id: str,
    nodes: list[PlannedNode],
    target: str,
    options: dict[str, Any],
    default_timeout: float,
) -> list[Step]:
    """The whole upgrade (no restore steps) for ``nodes``; empty without exactly one database server."""
    db = database_server(nodes)
    if db is None:
        return []
    others = [n for n in nodes if n.name != db.name]
    timeouts = dict(options.get("step_timeouts") or {})
    b = StepBuilder(
        run_id=run_id,
        timeouts=timeouts,
        default_timeout=float(options.get("step_timeout") or default_timeout),
    )

    # 2. Freeze -----------------------------------------------------------------------------------
    if options.get("require_signoff"):
        b.add(Phase.FREEZE, None, Local.SIGNOFF.value, timeout=0)
        b.next_wave()
    b.add(Phase.FREEZE, None, Local.TELL_USERS.value, {"grace": float(options.get("drain_grace") or 0)})
    b.next_wave()
    b.add(Phase.FREEZE, None, Local.LOCK_OUT.value)
    b.next_wave()
    # Every server stops serving users, the database server's own IIS, Tomcat (the Replication
    # Engine) and CRM services included: users already logged on to it would otherwise write
    # through the backup, and a restore would lose what they wrote.
    for n in [db, *others]:
        b.lane(Phase.FREEZE, n.name, stop_actions(n, web=True))
    b.next_wave()
    b.add(Phase.FREEZE, db.name, Local.VERIFY_DISCONNECTED.value, {"hosts": [n.name for n in [db, *others]]})
    b.next_wave()

    # 3. Back up ------------------------------------------------------------------------------------
    b.lane(
        Phase.BACKUP,
        db.name,
        [
            (Action.BACKUP_DATABASE.value, _dest(options, run_id, db.name, "database")),
            (Action.BACKUP_VIEWS.value, _dest(options, run_id, db.name, "views")),
        ],
    )
    for n in [db, *others]:
        b.lane(
            Phase.BACKUP,
            n.name,
            [
                (Action.BACKUP_PROGRAM_FILES.value, _dest(options, run_id, n.name, "program_files")),
                (Action.BACKUP_REGISTRY.value, _dest(options, run_id, n.name, "registry")),
            ],
        )
    b.next_wave()

    # 4. Baseline -----------------------------------------------------------------------------------
    b.add(Phase.BASELINE, db.name, Action.FINGERPRINT_RECORDS.value)
    b.next_wave()

    # 5. The database server first -------------------------------------------------------------------
    lane: list[tuple[str, dict[str, Any] | None]] = []
    if options.get("disable_triggers"):
        lane.append((Action.DISABLE_TRIGGERS.value, None))
    lane.append(
        (
            Action.RUN_INSTALLER.value,
            installer_params(options=options, target=target, run_id=run_id, database=True),
        )
    )
    lane.append((Action.READ_UPGRADE_LOG.value, None))
    b.lane(Phase.DATABASE_SERVER, db.name, lane)
    b.next_wave()

    # 6. The other servers, in batches ------------------------------------------------------------
    for batch in batches(others, max(1, int(options.get("batch_size") or 1))):
        for n in batch:
            b.lane(
                Phase.OTHER_SERVERS,
                n.name,
                [
                    (
                        Action.RUN_INSTALLER.value,
                        installer_params(options=options, target=target, run_id=run_id, database=False),
                    ),
                    (Action.READ_UPGRADE_LOG.value, None),
                ],
            )
        b.next_wave()

    # 7. After ---------------------------------------------------------------------------------------
    if options.get("disable_triggers"):
        b.add(Phase.AFTER, db.name, Action.ENABLE_TRIGGERS.value)
        b.next_wave()
    holder = next((n.name for n in nodes if n.replication_engine), None)
    b.add(Phase.AFTER, None, Local.ONE_REPLICATION_ENGINE.value, {"holder": holder})
    b.next_wave()
    for n in [db, *others]:
        b.lane(
            Phase.AFTER,
            n.name,
            [*start_actions(n), (Action.RELOAD_METADATA.value, None), (Action.WARMUP_LOGON.value, None)],
        )
    b.next_wave()
    for n in [db, *others]:
        b.add(Phase.AFTER, n.name, Local.SMOKE_CHECK.value, {"version": target})
    b.next_wave()
    b.add(Phase.AFTER, db.name, Action.FINGERPRINT_RECORDS.value)
    b.next_wave()
    # The post-upgrade backups, users still out: what they back up is what the checks passed.
    b.lane(
        Phase.AFTER,
        db.name,
        [(Action.BACKUP_DATABASE.value, _dest(options, run_id, db.name, "database-post"))],
    )
    for n in [db, *others]:
        b.lane(
            Phase.AFTER,
            n.name,
            [
                (Action.BACKUP_PROGRAM_FILES.value, _dest(options, run_id, n.name, "program_files-post")),
                (Action.BACKUP_REGISTRY.value, _dest(options, run_id, n.name, "registry-post")),
            ],
        )
    b.next_wave()
    if options.get("require_acceptance", True):
        b.add(Phase.AFTER, None, Local.ACCEPTANCE.value, timeout=0)
        b.next_wave()
    # Users return last. From here on nothing is restored on its own (what they write would be lost).
    b.add(Phase.AFTER, None, Local.RETURN_TO_SERVICE.value)
    b.next_wave()
    b.add(Phase.AFTER, None, Local.VERIFY_SERVICE.value)
    return b.steps


def running_services(services: dict[str, Any]) -> tuple[str, ...]:
    """CRM services reported running (``integration`` included), in the vocabulary's order."""
    order = [*CRM_SERVICES, "integration", "quickfind"]
    names = [s for s, st in services.items() if str(st) == "running" and s in order]
    return tuple(sorted(names, key=order.index))
