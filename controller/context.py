"""What the controller's routes and background loops share, built once in ``create_app``.

Beside the engines and the agent pool it holds the services built on them — the node registry,
the audit trail, the session counter — all sharing one injected ``clock`` (naive UTC, as the state
database stores times) so tests move time without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from config.aiotasks import TaskSupervisor
from config.api_tokens import ApiTokens
from config.crm_schema import CrmTables
from config.secrets import SecretBox
from config.settings import ControllerSettings
from config.state_schema import utcnow
from config.sysparams import SysParamsStore
from controller.access.node_tokens import NodeTokens
from controller.agents.client import AgentPool
from controller.audit import AuditTrail
from controller.dashboard.session import DashboardSessions
from controller.jobs.store import JobStore
from controller.metrics import ControllerMetrics
from controller.registry.heartbeat_writer import HeartbeatWriter
from controller.registry.liveness_guard import LivenessGuard
from controller.registry.nodes import NodeRegistry
from controller.registry.sessions import SessionCounter


@dataclass
class ControllerContext:
    settings: ControllerSettings
    state_engine: AsyncEngine
    crm_engine: AsyncEngine
    crm_tables: CrmTables
    sysparams: SysParamsStore
    agents: AgentPool
    box: SecretBox
    #: Each node's own token (one identity per agent).
    node_tokens: NodeTokens
    tasks: TaskSupervisor = field(default_factory=lambda: TaskSupervisor("controller"))
    clock: Callable[[], datetime] = utcnow
    metrics: ControllerMetrics = field(default_factory=ControllerMetrics)
    registry: NodeRegistry = field(init=False)
    audit: AuditTrail = field(init=False)
    #: The API tokens with roles (``crmcluster tokens``), and the dashboard's server-side sessions.
    api_tokens: ApiTokens = field(init=False)
    dashboard_sessions: DashboardSessions = field(init=False)
    jobs: JobStore = field(init=False)
    sessions: SessionCounter = field(init=False)
    #: Writes heartbeats in groups, one transaction for all that arrived meanwhile.
    heartbeat_writer: HeartbeatWriter = field(init=False)
    #: Holds "down for silence" decisions while the controller itself is behind, or in a storm.
    liveness_guard: LivenessGuard = field(init=False)
    #: Held while a change moves a role between nodes (Replication Engine, services, join, remove):
    #: one such change at a time, so two Replication Engines can never be installed concurrently.
    placement_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The agent URL each node's last heartbeat advertised, when it differs from the registered one
    #: (a heartbeat never changes ``agent_url``: a mismatch is a warning on the cluster view).
    advertised_agent_urls: dict[str, str] = field(default_factory=dict)
    #: The invariant warnings (code, nodes) seen by the last check, to log only what changes.
    warnings_seen: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)
    #: The last maintenance report read from msdb (``controller.maintenance``), for the dashboard.
    maintenance_report: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.registry = NodeRegistry(self.state_engine, clock=self.clock)
        self.heartbeat_writer = HeartbeatWriter(self.registry)
        timeout = self.settings.heartbeat_timeout
        self.liveness_guard = LivenessGuard(
            lag_limit=self.settings.liveness_lag_limit or timeout / 3,
            window=timeout,
            storm_share=self.settings.down_storm_share,
        )
        self.jobs = JobStore(self.state_engine, clock=self.clock)
        self.api_tokens = ApiTokens(self.state_engine, clock=self.clock)
        self.dashboard_sessions = DashboardSessions(self.state_engine, self.settings, clock=self.clock)
        self.audit = AuditTrail(self.state_engine, clock=self.clock, on_record=self.metrics.audited)
        self.sessions = SessionCounter(
            self.crm_engine,
            self.crm_tables,
            timeout_minutes=self.settings.session_timeout_minutes,
            tz=self.settings.crm_timezone,
            clock=self.clock,
        )
