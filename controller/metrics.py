"""The controller's Prometheus metrics, in a registry of its own (one per app, so tests can build
several apps in one process).

    crmcluster_controller_nodes{state}                       registered nodes by state
    crmcluster_controller_node_state{node,state}             1 for the state the node is in, else 0
    crmcluster_controller_node_up{node}                      1 when the node is up
    crmcluster_controller_logged_on_users{node}              users logged on (Activity)
    crmcluster_controller_heartbeat_age_seconds{node}        since the node's last heartbeat
    crmcluster_controller_heartbeats_total{node}             heartbeats received
    crmcluster_controller_cluster_warnings{code}             violated cluster invariants
    crmcluster_controller_changes_total{action,result}       audited API changes
    crmcluster_controller_jobs_total{kind,status}            multi-step jobs finished
    crmcluster_controller_database_up{db}                    1 when the state / CRM database answers
    crmcluster_upgrade_runs{status}                          upgrade runs by status (every status)
    crmcluster_upgrade_run_info{run,status,target_version}   1 for the newest run
    crmcluster_upgrade_steps{phase,status}                   the newest run's steps by phase, status
    crmcluster_upgrade_step_duration_seconds{action,status}  step durations (histogram)

Gauges are refreshed from the databases on each scrape (so every controller, leader or not,
reports the same cluster); counters and the histogram count what this process saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from config.state_schema import upgrade_runs, upgrade_steps
from config.vocabulary import NodeState

log = logging.getLogger("crmcluster.controller.metrics")

#: Every upgrade run status (DESIGN.md "Controller contract"): each is reported, 0 when no run has it,
#: so an alert on ``crmcluster_upgrade_runs{status="awaiting_fix"} > 0`` never sees a missing series.
RUN_STATUSES = (
    "planned",
    "running",
    "paused",
    "awaiting_approval",
    "awaiting_operator",
    "awaiting_fix",
    "awaiting_acceptance",
    "succeeded",
    "failed",
    "restoring",
    "restored",
    "restore_failed",
    "aborted",
)
#: Step durations: from a service stop (seconds) to an installer or a database backup (an hour).
STEP_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)

if TYPE_CHECKING:
    from controller.audit import AuditEntry
    from controller.registry.nodes import NodeRecord


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.nodes = Gauge(
            "crmcluster_controller_nodes", "Registered nodes by state", ["state"], registry=self.registry
        )
        self.node_up = Gauge(
            "crmcluster_controller_node_up", "1 when the node is up", ["node"], registry=self.registry
        )
        self.logged_on = Gauge(
            "crmcluster_controller_logged_on_users",
            "Users logged on to a node (Activity)",
            ["node"],
            registry=self.registry,
        )
        self.warnings = Gauge(
            "crmcluster_controller_cluster_warnings",
            "Violated cluster invariants by code",
            ["code"],
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "crmcluster_controller_heartbeats",
            "Heartbeats received from agents",
            ["node"],
            registry=self.registry,
        )
        self.changes = Counter(
            "crmcluster_controller_changes",
            "Changes made through the API (audited), by action and result",
            ["action", "result"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "crmcluster_controller_jobs",
            "Multi-step jobs finished, by kind and status",
            ["kind", "status"],
            registry=self.registry,
        )
        r = self.registry
        self.node_state = Gauge(
            "crmcluster_controller_node_state",
            "1 for the state the node is in",
            ["node", "state"],
            registry=r,
        )
        self.controller_lag = Gauge(
            "crmcluster_controller_lag_seconds",
            "Largest lateness of the controller's own loop or state database since the last watch pass",
            registry=r,
        )
        self.down_decisions_held = Counter(
            "crmcluster_controller_down_decisions_held",
            "Down-for-silence decisions held back: the controller was behind, or a storm",
            ["reason"],
            registry=r,
        )
        self.heartbeat_age = Gauge(
            "crmcluster_controller_heartbeat_age_seconds",
            "Seconds since the node's last heartbeat",
            ["node"],
            registry=r,
        )
        self.database_up = Gauge(
            "crmcluster_controller_database_up", "1 when the database answers", ["db"], registry=r
        )
        self.upgrade_runs = Gauge("crmcluster_upgrade_runs", "Upgrade runs by status", ["status"], registry=r)
        self.upgrade_run_info = Gauge(
            "crmcluster_upgrade_run_info",
            "1 for the newest upgrade run",
            ["run", "status", "target_version"],
            registry=r,
        )
        self.upgrade_steps = Gauge(
            "crmcluster_upgrade_steps",
            "Steps of the newest upgrade run, by phase and status",
            ["phase", "status"],
            registry=r,
        )
        self.step_duration = Histogram(
            "crmcluster_upgrade_step_duration_seconds",
            "Upgrade step durations, by action and outcome",
            ["action", "status"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.upgrade_alerts = Counter(
            "crmcluster_upgrade_alerts",
            "Upgrade alerts raised by this controller, by kind (failure_after_return: a step failed "
            "once users were back; the run paused, nothing restored)",
            ["kind"],
            registry=r,
        )
        self.upgrade_alert = Gauge(
            "crmcluster_upgrade_alert",
            "1 while the newest upgrade run is paused on an alert (users back, a step failed)",
            ["run", "kind"],
            registry=r,
        )
        for status in RUN_STATUSES:
            self.upgrade_runs.labels(status).set(0)

        self.maintenance_last_success = Gauge(
            "crmcluster_controller_maintenance_last_success",
            "1 when the maintenance task's last run succeeded, 0 when it failed (absent: never ran)",
            ["task"],
            registry=self.registry,
        )
        self.maintenance_last_run = Gauge(
            "crmcluster_controller_maintenance_last_run_timestamp_seconds",
            "When the maintenance task last ran (SQL Server Agent's history)",
            ["task"],
            registry=self.registry,
        )
        self.maintenance_failing = Gauge(
            "crmcluster_controller_maintenance_failing_tasks",
            "Maintenance tasks whose last run failed",
            registry=self.registry,
        )
        self.maintenance_warnings = Gauge(
            "crmcluster_controller_maintenance_warnings",
            "Maintenance plan warnings by code",
            ["code"],
            registry=self.registry,
        )
        self.restore_points = Gauge(
            "crmcluster_controller_restore_points",
            "Database backups recorded in msdb, by kind",
            ["kind"],
            registry=self.registry,
        )

    def maintenance(self, report: Mapping[str, Any]) -> None:
        """Gauges from a maintenance report (:mod:`controller.maintenance.sql_agent`)."""
        self.maintenance_last_success.clear()
        self.maintenance_last_run.clear()
        failing = 0
        for t in report.get("tasks") or []:
            outcome = t.get("last_outcome")
            if outcome in ("succeeded", "failed"):
                self.maintenance_last_success.labels(t["task"]).set(1 if outcome == "succeeded" else 0)
                failing += outcome == "failed"
            if t.get("last_run_at"):
                self.maintenance_last_run.labels(t["task"]).set(
                    datetime.fromisoformat(t["last_run_at"]).timestamp()
                )
        self.maintenance_failing.set(failing)
        self.maintenance_warnings.clear()
        for w in report.get("warnings") or []:
            self.maintenance_warnings.labels(w["code"]).inc()
        self.restore_points.clear()
        for kind in ("full", "differential", "log"):
            self.restore_points.labels(kind).set(
                sum(1 for p in report.get("restore_points") or [] if p.get("kind") == kind)
            )

    def audited(self, entry: AuditEntry) -> None:
        self.changes.labels(entry.action, entry.result).inc()

    def refresh(self, nodes: Sequence[NodeRecord], warning_codes: Sequence[str]) -> None:
        for state in NodeState:
            self.nodes.labels(state.value).set(sum(1 for n in nodes if n.state == state))
        self.node_up.clear()
        self.logged_on.clear()
        self.node_state.clear()
        for n in nodes:
            self.node_up.labels(n.name).set(1 if n.state == NodeState.UP else 0)
            self.logged_on.labels(n.name).set(n.logged_on)
            for state in NodeState:
                self.node_state.labels(n.name, state.value).set(1 if n.state == state else 0)
        self.warnings.clear()
        for code in set(warning_codes):
            self.warnings.labels(code).set(sum(1 for c in warning_codes if c == code))

    def heartbeat_ages(self, nodes: Sequence[NodeRecord], *, now: datetime) -> None:
        """Seconds since each node's last heartbeat (naive UTC, as the state database keeps times)."""
        self.heartbeat_age.clear()
        for n in nodes:
            if n.last_heartbeat is not None:
                self.heartbeat_age.labels(n.name).set(max(0.0, (now - n.last_heartbeat).total_seconds()))

    def upgrade_alert_raised(self, kind: str) -> None:
        self.upgrade_alerts.labels(kind).inc()

    def step_finished(self, action: str, status: str, seconds: float) -> None:
        self.step_duration.labels(action, status).observe(max(0.0, seconds))

    async def read_databases(self, *, state: AsyncEngine, crm: AsyncEngine, timeout: float = 2.0) -> None:
        """Refresh what a scrape reads from the databases: whether each answers, and the upgrades."""
        for db, engine in (("state", state), ("crm", crm)):
            try:
                async with asyncio.timeout(timeout), engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            except Exception as exc:  # noqa: BLE001 - any failure to answer is "down"; the log says why
                log.warning("metrics: the %s database does not answer: %s", db, type(exc).__name__)
                self.database_up.labels(db).set(0)
            else:
                self.database_up.labels(db).set(1)
        try:
            async with asyncio.timeout(timeout), state.connect() as conn:
                counts = dict(
                    (
                        await conn.execute(
                            select(upgrade_runs.c.status, func.count()).group_by(upgrade_runs.c.status)
                        )
                    )
                    .tuples()
                    .all()
                )
                newest = (
                    await conn.execute(
                        select(
                            upgrade_runs.c.id,
                            upgrade_runs.c.status,
                            upgrade_runs.c.target_version,
                            upgrade_runs.c.context,
                        )
                        .order_by(upgrade_runs.c.created_at.desc())
                        .limit(1)
                    )
                ).first()
                steps: list[tuple[str, str, int]] = []
                if newest is not None:
                    rows = await conn.execute(
                        select(upgrade_steps.c.phase, upgrade_steps.c.status, func.count())
                        .where(upgrade_steps.c.run_id == newest.id)
                        .group_by(upgrade_steps.c.phase, upgrade_steps.c.status)
                    )
                    steps = [(p, st, int(n)) for p, st, n in rows.tuples()]
        except Exception as exc:  # noqa: BLE001 - a scrape answers whatever the database does
            log.warning("metrics: upgrade runs not read: %s", type(exc).__name__)
            return
        for status in {*RUN_STATUSES, *counts}:
            self.upgrade_runs.labels(status).set(int(counts.get(status, 0)))
        self.upgrade_run_info.clear()
        self.upgrade_steps.clear()
        self.upgrade_alert.clear()
        if newest is not None:
            self.upgrade_run_info.labels(newest.id, newest.status, newest.target_version).set(1)
            alert = (newest.context or {}).get("alert") if isinstance(newest.context, dict) else None
            if alert and newest.status == "paused":
                self.upgrade_alert.labels(newest.id, str(alert.get("kind"))).set(1)
            for phase, status, n in steps:
                self.upgrade_steps.labels(phase, status).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
