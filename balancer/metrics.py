"""The balancer's Prometheus metrics, on a registry of its own (one per app, so tests can run many).

    crmcluster_balancer_logons_routed_total{server}        logons sent to each server
    crmcluster_balancer_decisions_total{reason}            least_loaded | sticky | first_available
                                                           | unavailable (503) | rejected (4xx)
    crmcluster_balancer_pending{server}                    pending logons (routed, not yet in Activity)
    crmcluster_balancer_logged_on{server}                  logged-on users from Activity
    crmcluster_balancer_server_up{server}                  1 when the server takes logons
    crmcluster_balancer_health_changes_total{server,to}    health check transitions (up|down)
    crmcluster_balancer_config_reloads_total{result}       changed | invalid
    crmcluster_balancer_db_errors_total{db}                crm | state
    crmcluster_balancer_stale                              1 while routing on last known data
    crmcluster_balancer_decision_seconds                   time to choose a server (histogram)

Gauges are set when ``/metrics`` is scraped, never on the hot path; per-server counter children
are cached so a logon costs one dictionary look-up and an ``inc()``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from balancer.pool import ServerPool

_PREFIX = "crmcluster_balancer_"
_LATENCY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25, 1.0)
DECISION_REASONS = ("least_loaded", "sticky", "first_available", "unavailable", "rejected")


class BalancerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.routed = Counter(_PREFIX + "logons_routed", "Logons routed, by server", ["server"], registry=r)
        self.decisions = Counter(_PREFIX + "decisions", "Decisions, by reason", ["reason"], registry=r)
        self.pending = Gauge(_PREFIX + "pending", "Pending logons, by server", ["server"], registry=r)
        self.logged_on = Gauge(_PREFIX + "logged_on", "Logged-on users, by server", ["server"], registry=r)
        self.server_up = Gauge(_PREFIX + "server_up", "1 if taking logons", ["server"], registry=r)
        self.health_changes = Counter(
            _PREFIX + "health_changes", "Health check transitions", ["server", "to"], registry=r
        )
        self.config_reloads = Counter(
            _PREFIX + "config_reloads", "Custom_SysParams reloads", ["result"], registry=r
        )
        self.db_errors = Counter(_PREFIX + "db_errors", "Database read failures", ["db"], registry=r)
        self.stale = Gauge(_PREFIX + "stale", "1 while routing on last known data", registry=r)
        self.decision_seconds = Histogram(
            _PREFIX + "decision_seconds", "Time to choose a server", buckets=_LATENCY_BUCKETS, registry=r
        )
        self._routed_children: dict[str, Counter] = {}
        self._reason_children = {reason: self.decisions.labels(reason) for reason in DECISION_REASONS}
        for db in ("crm", "state"):
            self.db_errors.labels(db)
        for result in ("changed", "invalid"):
            self.config_reloads.labels(result)

    def routed_to(self, server: str) -> None:
        child = self._routed_children.get(server)
        if child is None:
            child = self._routed_children[server] = self.routed.labels(server)
        child.inc()

    def decided(self, reason: str, started: float) -> None:
        self._reason_children[reason].inc()
        self.decision_seconds.observe(time.perf_counter() - started)

    def render(self, pool: ServerPool) -> bytes:
        """The text exposition, with the gauges brought up to date from ``pool``."""
        for gauge in (self.pending, self.logged_on, self.server_up):
            _clear(gauge)
        for slot in pool.slots:
            self.pending.labels(slot.name).set(pool.pending.count(slot.key))
            self.logged_on.labels(slot.name).set(slot.logged_on)
            self.server_up.labels(slot.name).set(1 if slot.routable else 0)
        self.stale.set(1 if pool.stale else 0)
        return generate_latest(self.registry)


def _clear(metric: MetricWrapperBase) -> None:
    metric.clear()
