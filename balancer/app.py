"""The balancer's ASGI app, built once from its settings by :func:`create_app`.

The logon routes (:mod:`balancer.logon`) are answered by a raw ASGI handler before FastAPI's
middleware and routing run; everything else (``/api/v1/servers``, ``/healthz``, ``/metrics``,
JSON 404s) is FastAPI. The lifespan loads the first configuration and counts, then supervises the
refresh loops of :mod:`balancer.refresh`.

    app = create_app(load_settings(BalancerSettings))

Test hooks (keyword-only): ``crm_engine``/``state_engine`` (used, not disposed), ``clock``
(monotonic seconds), ``crm_now`` (now in the CRM database's time zone), ``health_transport``
(an ``httpx`` transport for the health checks) and ``background=False`` (no loops: drive
``app.state.balancer.refresher`` by hand).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from balancer.activity import ActivityReader
from balancer.api import build_router
from balancer.health import HealthProbe
from balancer.logon import LogonRoute, Receive, Scope, Send
from balancer.metrics import BalancerMetrics
from balancer.pool import ServerPool
from balancer.refresh import Refresher
from balancer.replicas import ReplicaExchange, default_replica_id
from config.aiotasks import TaskSupervisor
from config.api_docs import DOC_PATHS, install_docs
from config.api_errors import install_error_handlers
from config.api_tokens import ApiTokens
from config.crm_schema import create_embedded_crm_tables, crm_tables
from config.database import make_engine
from config.errors import DatabaseUnavailable, MigrationError
from config.migrate import migrate
from config.request_guard import OPEN, Refused, bearer_token, install_guard, is_loopback
from config.secrets import redact, register_secret
from config.sessions import crm_now as crm_time
from config.settings import BalancerSettings
from config.sysparams import SysParamsStore

log = logging.getLogger("crmcluster.balancer")


@dataclass
class BalancerContext:
    settings: BalancerSettings
    pool: ServerPool
    metrics: BalancerMetrics
    clock: Callable[[], float]
    refresher: Refresher | None = None
    #: The controller's API tokens (state database): a viewer's token opens /metrics here too.
    api_tokens: ApiTokens | None = None
    tasks: TaskSupervisor = field(default_factory=lambda: TaskSupervisor("balancer"))


class BalancerApp(FastAPI):
    """FastAPI with the logon routes answered in front of it."""

    logon_route: LogonRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.logon_route
        if route is not None and scope["type"] == "http" and scope["path"].lower() in route.paths:
            await route(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: BalancerSettings,
    *,
    crm_engine: AsyncEngine | None = None,
    state_engine: AsyncEngine | None = None,
    clock: Callable[[], float] | None = None,
    crm_now: Callable[[], datetime] | None = None,
    health_transport: httpx.AsyncBaseTransport | None = None,
    background: bool = True,
) -> BalancerApp:
    """Build the balancer (see the module docstring for the test hooks)."""
    register_secret(settings.admin_token)
    clock = clock or time.monotonic

    def _crm_now() -> datetime:
        return crm_time(datetime.now(UTC), settings.crm_timezone)

    pool = ServerPool(
        install=settings.url_path_install,
        scheme=settings.scheme,
        pending_ttl=settings.pending_ttl,
        slow_start=settings.slow_start,
        fall=settings.health_fall,
        rise=settings.health_rise,
    )
    metrics = BalancerMetrics(pool)
    ctx = BalancerContext(settings=settings, pool=pool, metrics=metrics, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        quiet = logging.getLogger("httpx")
        if quiet.level == logging.NOTSET:
            # httpx logs every request at INFO: one line per health check, every 2 s per server.
            quiet.setLevel(logging.WARNING)
        own: list[AsyncEngine] = []
        crm = crm_engine
        if crm is None:
            crm = make_engine(settings.crm_url)
            own.append(crm)
        state = state_engine
        if state is None:
            if crm_engine is None and settings.state_url == settings.crm_url:
                state = crm  # the embedded default: one file for both
            else:
                state = make_engine(settings.state_url)
                own.append(state)
        tables = crm_tables(settings.crm_names)
        await _prepare(crm, state, tables=tables)
        probe = HealthProbe(timeout=settings.health_timeout, transport=health_transport)
        refresher = Refresher(
            pool=pool,
            metrics=metrics,
            crm_engine=crm,
            state_engine=state,
            sysparams=SysParamsStore(tables, settings.sysparam_row_names()),
            activity=ActivityReader(
                tables, session_timeout=timedelta(minutes=settings.session_timeout_minutes)
            ),
            probe=probe,
            replicas=(
                ReplicaExchange(
                    replica_id=settings.replica_id or default_replica_id(),
                    peer_ttl=max(5.0, 6 * settings.states_interval),
                )
                if settings.share_pending
                else None
            ),
            clock=clock,
            crm_now=crm_now or _crm_now,
            db_timeout=settings.db_timeout,
            sticky_refresh=settings.sticky_refresh,
        )
        ctx.refresher = refresher
        ctx.api_tokens = ApiTokens(state)
        if settings.counts_mode == "per_logon" and app_.logon_route is not None:
            app_.logon_route.before_decide = refresher.refresh_counts
        await refresher.refresh_config()
        await refresher.refresh_states()
        await refresher.refresh_counts()
        if background:
            every = Refresher.every
            ctx.tasks.start(
                "config", lambda: every(settings.config_interval, refresher.refresh_config), restart=True
            )
            ctx.tasks.start(
                "counts", lambda: every(settings.counts_interval, refresher.refresh_counts), restart=True
            )
            ctx.tasks.start(
                "states", lambda: every(settings.states_interval, refresher.refresh_states), restart=True
            )
            ctx.tasks.start(
                "health", lambda: every(settings.health_interval, refresher.check_health), restart=True
            )
        try:
            yield
        finally:
            await ctx.tasks.cancel_all()
            await probe.aclose()
            for engine in own:
                await engine.dispose()

    app_ = BalancerApp(
        title="crmcluster balancer",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description=(
            "Sends each Sage CRM logon to the web server with the fewest logged-on users. The logon "
            "routes answer 307 to the chosen server (or 503 when none can take a logon); "
            "`/api/v1/servers` shows the servers as the balancer sees them."
        ),
    )
    install_error_handlers(app_)
    install_docs(
        app_,
        allowed=lambda _request: None,
        title="crmcluster balancer",
        secured=lambda path: (
            path == "/metrics" or (settings.admin_token is not None and path.startswith("/api/"))
        ),
    )
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None

    async def authenticate(scope: Scope) -> Any:
        """Checked before any body is read. ``/metrics`` needs a token (the admin token of these
        settings, or any API token of the controller's: a viewer's is enough), and so do
        ``/docs``/``/openapi.json`` from another machine; ``/api/…`` needs one when an admin
        token is set. The logon routes and ``/healthz`` are open."""
        path = scope.get("path", "")
        if path == "/metrics" or (path in DOC_PATHS and not is_loopback(scope)):
            pass
        elif admin is None or not path.startswith("/api/"):
            return OPEN
        given = bearer_token(scope)
        if given is None:
            return Refused("no bearer token")
        if admin is not None and hmac.compare_digest(given.encode(), admin.encode()):
            return "admin"
        if ctx.api_tokens is not None:
            try:
                record = await ctx.api_tokens.lookup(given)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("API tokens not read (state database): %s", redact(repr(exc)))
                record = None
            if record is not None:
                return record.name
        return Refused("wrong bearer token")

    install_guard(app_, settings, authenticate=authenticate, service="balancer")
    app_.state.balancer = ctx
    app_.logon_route = LogonRoute(
        pool=pool,
        metrics=metrics,
        install=settings.url_path_install,
        retry_after=settings.retry_after,
        max_form_bytes=settings.max_form_bytes,
        clock=clock,
    )
    app_.include_router(
        build_router(
            pool=pool,
            metrics=metrics,
            admin_token=admin,
            retry_after=settings.retry_after,
            clock=clock,
            install=settings.url_path_install,
        )
    )
    return app_


async def _prepare(crm: AsyncEngine, state: AsyncEngine, *, tables: Any) -> None:
    """Bring the state schema up to date and, on an embedded CRM database, create its tables.

    Neither is fatal: a balancer that cannot reach a database starts in degraded mode and its
    loops keep trying (``/healthz`` says 503 until the first configuration and counts load).
    """
    try:
        # No wait for the database here: the balancer starts degraded and its loops keep trying.
        await migrate(state, wait=0)
    except MigrationError as exc:
        log.warning("state database not migrated (node states unavailable for now): %s", redact(str(exc)))
    if crm.dialect.name == "sqlite":
        try:
            await create_embedded_crm_tables(crm, tables)
        except (SQLAlchemyError, DatabaseUnavailable, OSError) as exc:
            log.warning("embedded CRM tables not created: %s", redact(repr(exc)))
