"""The controller's Prometheus metrics, in a registry of its own (one per app, so tests can build
several apps in one process).

Node states and cluster warnings are gauges refreshed from the state database on each scrape;
heartbeats, audited changes and finished jobs are counters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from config.vocabulary import NodeState

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
        for n in nodes:
            self.node_up.labels(n.name).set(1 if n.state == NodeState.UP else 0)
            self.logged_on.labels(n.name).set(n.logged_on)
        self.warnings.clear()
        for code in set(warning_codes):
            self.warnings.labels(code).set(sum(1 for c in warning_codes if c == code))

    def render(self) -> bytes:
        return generate_latest(self.registry)
