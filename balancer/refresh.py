"""The background loops that keep the :class:`~balancer.pool.ServerPool` current.

| loop          | reads                                   | every (default)      | contract      |
|---------------|-----------------------------------------|----------------------|---------------|
| ``config``    | ``Custom_SysParams`` (CRM database)     | ``config_interval`` 2 s  | within 5 s |
| ``counts``    | ``Activity`` + ``Users`` (CRM database) | ``counts_interval`` 0.5 s| at least 1/s |
| ``states``    | ``nodes`` (state database), and the     | ``states_interval`` 0.5 s| within 1 s |
|               | replicas' ``balancer_pending``          |                      |               |
| ``health``    | each server's logon page (HTTP GET)     | ``health_interval`` 2 s  | fall 3 / rise 2 |

Each pass is bounded by ``db_timeout``. A pass that fails (database unreachable, time-out) leaves
the pool as it was and marks it stale — *degraded mode*: logons keep being routed on the last
known servers and counts — and the next successful pass clears the mark by itself. An invalid
``Custom_SysParams`` value keeps the last good configuration (and is logged once, not every pass).

Every ``refresh_*`` method is one pass, so tests drive the pool without the loops or sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from balancer.activity import ActivityReader
from balancer.health import HealthProbe
from balancer.metrics import BalancerMetrics
from balancer.pool import NodeRow, ServerPool
from balancer.replicas import ReplicaExchange
from config.errors import DatabaseUnavailable, SysParamsError
from config.secrets import redact
from config.state_schema import nodes, utcnow
from config.sysparams import SysParamsStore
from config.vocabulary import NodeState

log = logging.getLogger("crmcluster.balancer")

_DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError, TimeoutError)
_STATES = {s.value for s in NodeState}


class Refresher:
    def __init__(
        self,
        *,
        pool: ServerPool,
        metrics: BalancerMetrics,
        crm_engine: AsyncEngine,
        state_engine: AsyncEngine,
        sysparams: SysParamsStore,
        activity: ActivityReader,
        probe: HealthProbe,
        replicas: ReplicaExchange | None,
        clock: Callable[[], float],
        crm_now: Callable[[], datetime],
        db_timeout: float,
        sticky_refresh: float = 5.0,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.crm_engine = crm_engine
        self.state_engine = state_engine
        self.sysparams = sysparams
        self.activity = activity
        self.probe = probe
        self.replicas = replicas
        self.clock = clock
        self.crm_now = crm_now
        self.db_timeout = db_timeout
        self.sticky_refresh = sticky_refresh
        self._sessions_read_at: float | None = None
        self._config_problem: str | None = None
        self._db_problem: dict[str, str | None] = {"crm": None, "state": None}
        self._counts_lock = asyncio.Lock()

    # One pass each ---------------------------------------------------------------------------------
    async def refresh_config(self) -> bool:
        """Read ``Custom_SysParams``; True when it was read (changed or not)."""
        try:
            async with asyncio.timeout(self.db_timeout), self.crm_engine.connect() as conn:
                cfg = await self.sysparams.read(conn)
        except SysParamsError as exc:
            self.metrics.config_reloads.labels("invalid").inc()
            if exc.message != self._config_problem:
                self._config_problem = exc.message
                log.warning("Custom_SysParams is invalid, keeping the last good configuration: %s", exc)
            self._db_ok("crm")
            return True
        except _DB_ERRORS as exc:
            self._db_failed("crm", exc)
            return False
        self._config_problem = None
        self._db_ok("crm")
        before = self.pool.config
        added = self.pool.apply_config(cfg, now=self.clock())
        if before is not None and cfg != before:
            self.metrics.config_reloads.labels("changed").inc()
            log.info("cluster configuration changed: servers %s", ", ".join(cfg.server_names) or "(none)")
        if added:
            await self.check_health(only=added)
        return True

    async def refresh_counts(self) -> bool:
        """Read ``Activity``; True when the counts are fresh."""
        async with self._counts_lock:
            try:
                async with asyncio.timeout(self.db_timeout), self.crm_engine.connect() as conn:
                    started = self.clock()
                    full = (
                        self._sessions_read_at is None
                        or started - self._sessions_read_at >= self.sticky_refresh
                    )
                    snap = await self.activity.read(
                        conn, since_id=self.pool.last_activity_id, now=self.crm_now(), full=full
                    )
            except _DB_ERRORS as exc:
                self._db_failed("crm", exc)
                return False
            if full:
                self._sessions_read_at = started
            self.pool.apply_counts(snap, now=self.clock())
            self._db_ok("crm")
            return True

    async def refresh_states(self) -> bool:
        """Read the controller's node rows and exchange pending logons with the other replicas."""
        try:
            async with asyncio.timeout(self.db_timeout), self.state_engine.begin() as conn:
                rows = (await conn.execute(select(nodes.c.name, nodes.c.state, nodes.c.weight))).all()
                peers = None
                if self.replicas is not None:
                    own = self.pool.pending.counts()
                    peers = await self.replicas.exchange(conn, own=own, now=utcnow())
        except _DB_ERRORS as exc:
            if self.replicas is not None:
                self.replicas.forget_publication()
            self._db_failed("state", exc)
            return False
        parsed: dict[str, NodeRow] = {}
        for name, state, weight in rows:
            st = str(state).strip().lower()
            if st not in _STATES:
                st = NodeState.DOWN.value  # an unknown word is not a promise the server is up
            try:
                w = min(max(float(weight), 0.0), 1.0)
            except (TypeError, ValueError):
                w = 1.0
            parsed[str(name).strip().lower()] = NodeRow(st, w)
        self.pool.apply_node_states(parsed, now=self.clock())
        if peers is not None:
            self.pool.apply_peer_pending(peers)
        self._db_ok("state")
        return True

    async def check_health(self, *, only: list[str] | None = None) -> None:
        """Check every server's logon page once (or only the servers in ``only``)."""
        urls = self.pool.health_urls()
        if only is not None:
            urls = {k: v for k, v in urls.items() if k in only}
        results = await self.probe.check_all(urls)
        now = self.clock()
        for key, ok in results.items():
            changed = self.pool.apply_health(key, ok, now=now)
            slot = self.pool.by_key.get(key)
            name = slot.name if slot else key
            self.metrics.health_checks.labels(name, "up" if ok else "down").inc()
            if changed is not None:
                to = "up" if changed else "down"
                self.metrics.health_changes.labels(name, to).inc()
                log.warning("server %s is %s (health check)", name, to)

    # State of the databases ------------------------------------------------------------------------
    def _db_failed(self, db: str, exc: BaseException) -> None:
        self.metrics.db_errors.labels(db).inc()
        if db == "crm":
            self.pool.crm_stale = True
        else:
            self.pool.state_stale = True
        problem = f"{type(exc).__name__}: {exc}"[:300]
        if self._db_problem[db] is None:
            log.warning("%s database unreadable, routing on last known data: %s", db, redact(problem))
        self._db_problem[db] = problem

    def _db_ok(self, db: str) -> None:
        if self._db_problem[db] is not None:
            log.warning("%s database readable again", db)
            self._db_problem[db] = None
        if db == "crm":
            self.pool.crm_stale = False
        else:
            self.pool.state_stale = False

    # Loops ---------------------------------------------------------------------------------------
    @staticmethod
    async def every(interval: float, step: Callable[[], Awaitable[object]]) -> None:
        """Run ``step`` now and then every ``interval`` seconds, forever."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await step()
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
