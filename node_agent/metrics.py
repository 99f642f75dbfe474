"""The agent's Prometheus metrics (``GET /metrics``), on a registry of its own.

    crmcluster_agent_operations_total{action,state}           operations finished: succeeded, failed,
                                                              cancelled, interrupted
    crmcluster_agent_operation_duration_seconds{action}       how long they ran (histogram)
    crmcluster_agent_heartbeats_total{result}                 heartbeats: sent | failed
    crmcluster_agent_assigned_state{state}                    1 for the state the controller holds for
                                                              this node (none heard: all 0)
    crmcluster_agent_check_answers_total{answer}              HAProxy agent-check answers: up | drain |
                                                              maint | down

The node is the scrape target: deploy/prometheus/prometheus.yml gives each agent a ``node`` label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from config.vocabulary import NodeState
from node_agent.protocol import OperationRecord

if TYPE_CHECKING:
    from node_agent.agent_check import AgentCheck
    from node_agent.assignment import AssignmentKeeper
    from node_agent.heartbeat import HeartbeatSender

#: From a service stop (seconds) to an installer or a database backup (an hour).
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
ANSWERS = ("up", "drain", "maint", "down")


class AgentMetrics(Collector):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.operations = Counter(
            "crmcluster_agent_operations",
            "Operations finished, by action and state",
            ["action", "state"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "crmcluster_agent_operation_duration_seconds",
            "How long operations ran, by action",
            ["action"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.keeper: AssignmentKeeper | None = None
        self.heartbeat: HeartbeatSender | None = None
        self.check: AgentCheck | None = None
        self.registry.register(self)

    def operation_finished(self, record: OperationRecord) -> None:
        self.operations.labels(record.action.value, record.state.value).inc()
        if record.finished_at is not None and record.started_at is not None:  # it ran (not cancelled waiting)
            seconds = (record.finished_at - record.started_at).total_seconds()
            self.duration.labels(record.action.value).observe(max(0.0, seconds))

    def collect(self) -> Iterator[Metric]:
        beats = CounterMetricFamily("crmcluster_agent_heartbeats", "Heartbeats, by result", labels=["result"])
        hb = self.heartbeat
        beats.add_metric(["sent"], hb.sent if hb else 0)
        beats.add_metric(["failed"], hb.failed if hb else 0)
        yield beats
        assigned = GaugeMetricFamily(
            "crmcluster_agent_assigned_state",
            "1 for the state the controller holds for this node",
            labels=["state"],
        )
        current = self.keeper.current if self.keeper else None
        for state in NodeState:
            assigned.add_metric([state.value], 1 if current is not None and current.state == state else 0)
        yield assigned
        answers = CounterMetricFamily(
            "crmcluster_agent_check_answers", "HAProxy agent-check answers, by answer", labels=["answer"]
        )
        counts = self.check.answers if self.check else {}
        for answer in ANSWERS:
            answers.add_metric([answer], counts.get(answer, 0))
        yield answers

    def render(self) -> bytes:
        return generate_latest(self.registry)
