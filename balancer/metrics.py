"""The balancer's Prometheus metrics, on a registry of its own (one per app, so tests can run many).

    crmcluster_balancer_logons_routed_total{server,reason} logons sent to each server, by why it
                                                           was chosen (least_loaded | sticky |
                                                           first_available)
    crmcluster_balancer_decisions_total{reason}            least_loaded | sticky | first_available
                                                           | unavailable (503) | rejected (4xx)
    crmcluster_balancer_decision_seconds                   time to choose a server (histogram)
    crmcluster_balancer_pending_logons{server}             pending logons (routed, not yet in
                                                           Activity; this replica's and its peers')
    crmcluster_balancer_logged_on_users{server}            logged-on users from Activity
    crmcluster_balancer_server_up{server}                  1 when the server takes logons
    crmcluster_balancer_stale                              1 while routing on last known data
    crmcluster_balancer_database_up{db}                    0 while that database's reads fail
    crmcluster_balancer_health_checks_total{server,result} health check results (up|down)
    crmcluster_balancer_health_changes_total{server,to}    health check transitions (up|down)
    crmcluster_balancer_config_reloads_total{result}       changed | invalid
    crmcluster_balancer_db_errors_total{db}                crm | state
    process_*, python_gc_*                                 the client library's standard process
                                                           (CPU, memory) and collector metrics

The hot path only adds to plain integers (:meth:`BalancerMetrics.decided`): a ``prometheus_client``
counter takes a lock per ``inc()``, which cost a measurable share of the logon throughput. The
integers, the histogram buckets and the gauges (read from the pool) are turned into metric
families when ``/metrics`` is scraped. Updates happen on the event loop thread only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, GCCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from balancer.pool import ServerPool

_PREFIX = "crmcluster_balancer_"
LATENCY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25, 1.0)
DECISION_REASONS = ("least_loaded", "sticky", "first_available", "unavailable", "rejected")
#: The reasons a logon is routed to a server (the others answer without one).
ROUTED_REASONS = ("least_loaded", "sticky", "first_available")


class BalancerMetrics(Collector):
    def __init__(self, pool: ServerPool) -> None:
        self.pool = pool
        #: server -> reason -> logons; a server's dict is made once, on its first logon.
        self.routed: dict[str, dict[str, int]] = {}
        self.decisions: dict[str, int] = dict.fromkeys(DECISION_REASONS, 0)
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.health_changes = Counter(
            _PREFIX + "health_changes", "Health check transitions", ["server", "to"], registry=r
        )
        self.health_checks = Counter(
            _PREFIX + "health_checks", "Health check results", ["server", "result"], registry=r
        )
        self.config_reloads = Counter(
            _PREFIX + "config_reloads", "Custom_SysParams reloads", ["result"], registry=r
        )
        self.db_errors = Counter(_PREFIX + "db_errors", "Database read failures", ["db"], registry=r)
        for db in ("crm", "state"):
            self.db_errors.labels(db)
        for result in ("changed", "invalid"):
            self.config_reloads.labels(result)
        r.register(self)
        ProcessCollector(registry=r)
        GCCollector(registry=r)

    # The hot path ------------------------------------------------------------------------------
    def decided(self, reason: str, started: float, server: str | None = None) -> None:
        """Count one decision (and the logon routed to ``server``), timed from ``started``."""
        elapsed = perf_counter() - started
        self.decisions[reason] += 1
        self._buckets[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        self._latency_sum += elapsed
        if server is not None:
            counts = self.routed.get(server)
            if counts is None:
                counts = self.routed[server] = dict.fromkeys(ROUTED_REASONS, 0)
            counts[reason] += 1

    # Scrape ------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        routed = CounterMetricFamily(
            _PREFIX + "logons_routed", "Logons routed, by server and reason", labels=["server", "reason"]
        )
        for server, counts in sorted(self.routed.items()):
            for reason, n in counts.items():
                routed.add_metric([server, reason], n)
        yield routed
        decisions = CounterMetricFamily(_PREFIX + "decisions", "Decisions, by reason", labels=["reason"])
        for reason, n in self.decisions.items():
            decisions.add_metric([reason], n)
        yield decisions
        cumulative, buckets = 0, []
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self._buckets, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            _PREFIX + "decision_seconds",
            "Time to choose a server",
            buckets=buckets,
            sum_value=self._latency_sum,
        )
        pool = self.pool
        pending = GaugeMetricFamily(
            _PREFIX + "pending_logons", "Pending logons, by server", labels=["server"]
        )
        logged_on = GaugeMetricFamily(
            _PREFIX + "logged_on_users", "Logged-on users, by server", labels=["server"]
        )
        up = GaugeMetricFamily(_PREFIX + "server_up", "1 when the server takes logons", labels=["server"])
        for slot in pool.slots:
            pending.add_metric([slot.name], len(slot.pending) + slot.peer_pending)
            logged_on.add_metric([slot.name], slot.logged_on)
            up.add_metric([slot.name], 1 if slot.routable else 0)
        yield from (pending, logged_on, up)
        yield GaugeMetricFamily(
            _PREFIX + "stale", "1 while routing on last known data", 1 if pool.stale else 0
        )
        db_up = GaugeMetricFamily(
            _PREFIX + "database_up", "0 while reads of the database fail", labels=["db"]
        )
        db_up.add_metric(["crm"], 0 if pool.crm_stale else 1)
        db_up.add_metric(["state"], 0 if pool.state_stale else 1)
        yield db_up

    def render(self) -> bytes:
        return generate_latest(self.registry)
