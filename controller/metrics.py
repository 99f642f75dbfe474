"""The controller's Prometheus metrics, in a registry of its own (one per app, so tests can build
several apps in one process).

Node states and cluster warnings are gauges refreshed from the state database on each scrape;
heartbeats, audited changes and finished jobs are counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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
