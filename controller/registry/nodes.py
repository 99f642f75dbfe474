"""The cluster registry: the web servers of the cluster as rows of the state database's ``nodes``.

A node is registered with its name (as in ``ServerNames``), its agent's URL, the host[:port] of its
CRM web server (``fqdn``, its FQServerNames entry) and its roles. The row is also what the
balancer reads at least every second (DESIGN.md contract 5), so ``state`` and ``weight`` written
here take effect there within a second.

States (:class:`~config.vocabulary.NodeState`):

- ``up`` / ``down`` are *liveness*: set from heartbeats (``up`` while the agent reports IIS running,
  ``down`` when it reports IIS stopped or has been silent for ``heartbeat_timeout``).
- ``draining`` / ``maintenance`` / ``upgrading`` are *held* states set by an operation (a drain,
  a join, an upgrade); heartbeats never override them. Releasing a held state (:meth:`release`)
  puts the node back to ``up`` or ``down`` from its last heartbeat.

``roles`` is kept from observation where the agent can see it: ``replication_engine`` follows the
agent's report of the war file, ``indexer``/``escalation``/``email_manager`` follow the services
it reports installed; ``database`` is as registered (and as the agent reports). ``fenced`` marks a
node that lost the Replication Engine while down: should it come back with one, the controller
removes it (see :mod:`controller.cluster_ops.replication_engine`).

    registry = NodeRegistry(engine, clock=utcnow)
    await registry.register(name="crm4", agent_url="http://10.0.0.4:8701", fqdn="crm4.example.com",
                            roles=["indexer"])
    await registry.hold("crm4", NodeState.MAINTENANCE)   # balancer stops sending within a second
    await registry.release("crm4")                        # back to up (or down if silent)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from config.state_schema import nodes, utcnow
from config.vocabulary import CRM_SERVICES, NodeState, Role
from controller.errors import UnknownNode
from node_agent.protocol import NodeStatus, ServiceStatus

LIVENESS_STATES = frozenset({NodeState.UP, NodeState.DOWN})
HELD_STATES = frozenset({NodeState.DRAINING, NodeState.MAINTENANCE, NodeState.UPGRADING})
#: Roles the registry learns from the agent's status rather than from registration.
OBSERVED_ROLES = frozenset({Role.REPLICATION_ENGINE.value, *CRM_SERVICES})
_INSTALLED = frozenset({ServiceStatus.RUNNING, ServiceStatus.STOPPED})


@dataclass(frozen=True)
class NodeRecord:
    """One row of ``nodes``. ``observed`` is the agent's last :class:`NodeStatus` as JSON."""

    name: str
    state: str
    weight: float
    fqdn: str | None
    agent_url: str | None
    roles: list[str]
    version: str | None
    logged_on: int
    observed: dict[str, Any] | None
    fenced: bool
    last_heartbeat: datetime | None
    updated_at: datetime

    @property
    def status(self) -> NodeStatus | None:
        if not self.observed:
            return None
        try:
            return NodeStatus.model_validate(self.observed)
        except ValueError:
            return None

    @property
    def has_replication_engine(self) -> bool:
        st = self.status
        return st.replication_engine if st is not None else Role.REPLICATION_ENGINE in self.roles

    def has_service(self, service: str) -> bool:
        st = self.status
        if st is not None and service in st.services:
            return st.services[service] in _INSTALLED
        return service in self.roles

    @property
    def is_database(self) -> bool:
        return Role.DATABASE in self.roles

    def public(self) -> dict[str, Any]:
        """The node as ``GET /cluster`` shows it."""
        return {
            "name": self.name,
            "fqdn": self.fqdn,
            "agent_url": self.agent_url,
            "roles": self.roles,
            "state": self.state,
            "weight": self.weight,
            "version": self.version,
            "logged_on": self.logged_on,
            "last_heartbeat": self.last_heartbeat.isoformat() + "Z" if self.last_heartbeat else None,
            "fenced": self.fenced,
        }


def record_from_row(row: Any) -> NodeRecord:
    m = row._mapping
    return NodeRecord(
        name=m["name"],
        state=m["state"],
        weight=float(m["weight"]),
        fqdn=m["fqdn"],
        agent_url=m["agent_url"],
        roles=list(m["roles"] or []),
        version=m["version"],
        logged_on=int(m["logged_on"] or 0),
        observed=m["observed"],
        fenced=bool(m["fenced"]),
        last_heartbeat=m["last_heartbeat"],
        updated_at=m["updated_at"],
    )


def roles_from_status(registered: Iterable[str], status: NodeStatus) -> list[str]:
    """Registered roles, with the observable ones replaced by what the agent reports."""
    roles = {r for r in registered if r not in OBSERVED_ROLES}
    roles |= {r for r in status.roles if r not in OBSERVED_ROLES}
    if status.replication_engine:
        roles.add(Role.REPLICATION_ENGINE.value)
    for service, st in status.services.items():
        if service in CRM_SERVICES and st in _INSTALLED:
            roles.add(service)
    order = [r.value for r in Role]
    return sorted(roles, key=lambda r: order.index(r) if r in order else len(order))


def fqdn_from_web_url(web_url: str | None) -> str | None:
    """``http://127.0.0.1:8811/`` → ``127.0.0.1:8811`` (the FQServerNames entry form)."""
    if not web_url:
        return None
    rest = web_url.split("://", 1)[-1]
    return rest.split("/", 1)[0] or None


class NodeRegistry:
    """Reads and writes ``nodes``. Every write stamps ``updated_at`` with the injected clock."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    async def list_nodes(self) -> list[NodeRecord]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(nodes).order_by(nodes.c.name))
            return [record_from_row(r) for r in rows]

    async def find(self, name: str) -> NodeRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(nodes).where(nodes.c.name == name))).first()
            return record_from_row(row) if row is not None else None

    async def get(self, name: str) -> NodeRecord:
        rec = await self.find(name)
        if rec is None:
            raise UnknownNode(name)
        return rec

    async def register(
        self,
        *,
        name: str,
        agent_url: str | None,
        fqdn: str | None,
        roles: Iterable[str],
        state: NodeState | None = None,
    ) -> tuple[NodeRecord, bool]:
        """Insert the node, or update the registration of an existing one; ``(record, created)``.

        A new node starts ``down`` (or ``state``) until its first heartbeat; re-registering keeps
        the node's state and observations.
        """
        now = self.clock()
        values: dict[str, Any] = {"agent_url": agent_url, "roles": sorted(set(roles)), "updated_at": now}
        if fqdn is not None:
            values["fqdn"] = fqdn
        async with self.engine.begin() as conn:
            exists = (await conn.execute(select(nodes.c.name).where(nodes.c.name == name))).first()
            if exists is None:
                await conn.execute(
                    nodes.insert().values(
                        name=name,
                        state=(state or NodeState.DOWN).value,
                        weight=1.0,
                        fqdn=fqdn,
                        logged_on=0,
                        fenced=False,
                        **{k: v for k, v in values.items() if k != "fqdn"},
                    )
                )
            else:
                if state is not None:
                    values["state"] = state.value
                await conn.execute(update(nodes).where(nodes.c.name == name).values(**values))
        return await self.get(name), exists is None

    async def remove(self, name: str) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(nodes).where(nodes.c.name == name))
        if result.rowcount == 0:
            raise UnknownNode(name)

    async def _update(self, name: str, **values: Any) -> NodeRecord:
        values["updated_at"] = self.clock()
        async with self.engine.begin() as conn:
            result = await conn.execute(update(nodes).where(nodes.c.name == name).values(**values))
        if result.rowcount == 0:
            raise UnknownNode(name)
        return await self.get(name)

    async def set_state(
        self, name: str, state: NodeState | str, *, weight: float | None = None
    ) -> NodeRecord:
        """Write ``state`` (and ``weight``) as is; the balancer honours it within a second."""
        values: dict[str, Any] = {"state": NodeState(state).value}
        if weight is not None:
            values["weight"] = weight
        return await self._update(name, **values)

    async def hold(self, name: str, state: NodeState) -> NodeRecord:
        """Put the node in a held state (draining, maintenance, upgrading)."""
        if state not in HELD_STATES:
            raise ValueError(f"{state} is not a held state")
        return await self.set_state(name, state)

    async def release(self, name: str, *, heartbeat_timeout: float) -> NodeRecord:
        """Leave a held state: ``up`` if the node's heartbeat is fresh and IIS runs, else ``down``."""
        rec = await self.get(name)
        return await self.set_state(name, self.liveness(rec, heartbeat_timeout=heartbeat_timeout))

    def liveness(self, rec: NodeRecord, *, heartbeat_timeout: float) -> NodeState:
        if rec.last_heartbeat is None:
            return NodeState.DOWN
        if self.clock() - rec.last_heartbeat > timedelta(seconds=heartbeat_timeout):
            return NodeState.DOWN
        st = rec.status
        if st is not None and st.web != ServiceStatus.RUNNING:
            return NodeState.DOWN
        return NodeState.UP

    async def set_fenced(self, name: str, fenced: bool) -> NodeRecord:
        return await self._update(name, fenced=fenced)

    def observed_values(self, rec: NodeRecord, status: NodeStatus, *, heartbeat: bool) -> dict[str, Any]:
        """The columns an agent's report sets on its row (liveness state apart)."""
        values: dict[str, Any] = {
            "observed": status.model_dump(mode="json"),
            "version": status.version,
            "roles": roles_from_status(rec.roles, status),
        }
        if rec.fqdn is None:
            values["fqdn"] = fqdn_from_web_url(status.web_url)
        if heartbeat:
            values["last_heartbeat"] = self.clock()
        values["updated_at"] = self.clock()
        return values

    async def observe(
        self, name: str, status: NodeStatus, *, agent_url: str | None = None, heartbeat: bool = True
    ) -> NodeRecord:
        """Record what the agent reports: roles, version, observed status; liveness from a heartbeat.
        (Heartbeats themselves go through :class:`~controller.registry.heartbeat_writer.HeartbeatWriter`,
        which writes many in one transaction.)"""
        rec = await self.get(name)
        values = self.observed_values(rec, status, heartbeat=heartbeat)
        if agent_url and agent_url != rec.agent_url:
            values["agent_url"] = agent_url
        alive = NodeState.UP if status.web == ServiceStatus.RUNNING else NodeState.DOWN
        async with self.engine.begin() as conn:
            result = await conn.execute(update(nodes).where(nodes.c.name == name).values(**values))
            if result.rowcount == 0:
                raise UnknownNode(name)
            if heartbeat:
                # Conditional in SQL: a drain or an upgrade that holds the node between our read and
                # this write keeps its state.
                await conn.execute(
                    update(nodes)
                    .where(nodes.c.name == name, nodes.c.state.in_([s.value for s in LIVENESS_STATES]))
                    .values(state=alive.value)
                )
        return await self.get(name)

    def _silent(self, heartbeat_timeout: float) -> Any:
        cutoff = self.clock() - timedelta(seconds=heartbeat_timeout)
        return (nodes.c.state == NodeState.UP.value) & (
            nodes.c.last_heartbeat.is_(None) | (nodes.c.last_heartbeat < cutoff)
        )

    async def silent_nodes(self, *, heartbeat_timeout: float) -> tuple[list[str], int]:
        """The ``up`` nodes whose last heartbeat is older than the time-out, and how many nodes
        are registered in all."""
        async with self.engine.connect() as conn:
            names = [
                r[0] for r in await conn.execute(select(nodes.c.name).where(self._silent(heartbeat_timeout)))
            ]
            total = (await conn.execute(select(func.count()).select_from(nodes))).scalar_one()
        return names, int(total)

    async def mark_silent_down(self, *, heartbeat_timeout: float, names: Sequence[str]) -> list[str]:
        """Those of ``names`` still ``up`` and silent become ``down`` (re-checked in the update, so
        a heartbeat that arrived meanwhile keeps its node up). Returns the nodes marked down."""
        if not names:
            return []
        silent = self._silent(heartbeat_timeout) & nodes.c.name.in_(list(names))
        async with self.engine.begin() as conn:
            down = [r[0] for r in await conn.execute(select(nodes.c.name).where(silent))]
            if down:
                await conn.execute(
                    update(nodes).where(silent).values(state=NodeState.DOWN.value, updated_at=self.clock())
                )
        return down

    async def set_logged_on(self, counts: dict[str, int]) -> None:
        """Write each node's logged-on count (nodes absent from ``counts`` have none)."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(select(nodes.c.name, nodes.c.logged_on))
            for name, current in rows.all():
                n = counts.get(name, 0)
                if n != current:
                    await conn.execute(update(nodes).where(nodes.c.name == name).values(logged_on=n))
