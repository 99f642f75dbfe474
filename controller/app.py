"""The controller's ASGI app, built once from its settings by :func:`create_app`.

The lifespan migrates the state database (under the shared lock), builds the
:class:`~controller.context.ControllerContext`, marks jobs a previous process left running as
``interrupted`` and starts the supervised heartbeat watch (down detection, logged-on counts).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from config.api_docs import install_docs
from config.api_errors import install_error_handlers
from config.crm_schema import create_embedded_crm_tables, crm_tables
from config.database import make_engine
from config.logs import RequestContext
from config.migrate import migrate
from config.request_guard import install_guard
from config.roles import Role
from config.secrets import SecretBox, register_secret
from config.settings import ControllerSettings
from config.state_schema import utcnow
from config.sysparams import SysParamsStore
from controller.access import authn
from controller.access.agent_tls import agent_verifier
from controller.access.node_tokens import NodeTokens
from controller.agents.client import AgentPool
from controller.api import cluster as cluster_api
from controller.api import cluster_ops as cluster_ops_api
from controller.api import license_key as license_key_api
from controller.api import maintenance as maintenance_api
from controller.api import nodes as nodes_api
from controller.api import records as records_api
from controller.api import sizing as sizing_api
from controller.api import tokens as tokens_api
from controller.api import upgrades as upgrades_api
from controller.api.deps import authorize
from controller.context import ControllerContext
from controller.dashboard import routes as dashboard
from controller.errors import API_ERRORS
from controller.maintenance import sql_agent as maintenance
from controller.registry import cluster, heartbeats, liveness_guard
from controller.upgrade import runtime as upgrade
from node_agent.protocol import REQUEST_ID_HEADER

log = logging.getLogger("crmcluster.controller")

#: Every router of the controller (tests/security/test_roles.py maps each route to its role).
ROUTERS = tuple(
    m.router
    for m in (
        cluster_api,
        nodes_api,
        cluster_ops_api,
        records_api,
        sizing_api,
        maintenance_api,
        license_key_api,
        tokens_api,
        upgrades_api,
        dashboard,
    )
)


def create_app(
    settings: ControllerSettings,
    *,
    agent_transport_for: Callable[[str], httpx.AsyncBaseTransport | None] | None = None,
    clock: Callable[[], datetime] | None = None,
    watch: bool = True,
) -> FastAPI:
    """Build the controller.

    ``agent_transport_for(url)`` lets tests reach agents in-process; ``clock`` (naive UTC) moves
    time for heartbeat time-outs and drains; ``watch=False`` leaves the heartbeat watch loop off
    so a test drives :func:`controller.registry.heartbeats.sweep` itself.
    """
    for secret in (settings.admin_token, settings.operator_token, settings.secret_key):
        register_secret(secret)
    # One INFO line per agent request would drown the log; failures are logged where they matter.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
    assert settings.secret_key is not None  # ControllerSettings requires it
    secret_key = settings.secret_key

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state_engine = make_engine(settings.state_url)
        crm_engine = make_engine(settings.crm_url) if settings.crm_url != settings.state_url else state_engine
        tables = crm_tables(settings.crm_names)
        await migrate(state_engine)
        if crm_engine.dialect.name == "sqlite":
            await create_embedded_crm_tables(crm_engine, tables)
        node_tokens = NodeTokens(state_engine, secret_key.get_secret_value(), clock=clock or utcnow)
        ctx = ControllerContext(
            settings=settings,
            state_engine=state_engine,
            crm_engine=crm_engine,
            crm_tables=tables,
            sysparams=SysParamsStore(tables, settings.sysparam_row_names()),
            node_tokens=node_tokens,
            agents=AgentPool(
                node_tokens.token_for_url,
                token_of_node=node_tokens.token_for_node,
                transport_for=agent_transport_for,
                timeout=settings.agent_request_timeout,
                verify_for=agent_verifier(node_tokens, settings.agent_ca_file),
            ),
            box=SecretBox(settings.secret_key),  # type: ignore[arg-type]  # required by ControllerSettings
            clock=clock or utcnow,
        )
        app.state.ctx = ctx
        await ctx.jobs.interrupt_running()
        if watch:
            ctx.tasks.start("heartbeat-watch", lambda: heartbeats.watch(ctx), restart=True)
            ctx.tasks.start("loop-lag", lambda: liveness_guard.monitor(ctx.liveness_guard), restart=True)
            ctx.tasks.start("maintenance-watch", lambda: maintenance.watch(ctx), restart=True)
        upgrade.start(ctx)
        try:
            yield
        finally:
            await ctx.tasks.cancel_all()
            await ctx.agents.aclose()
            await state_engine.dispose()
            if crm_engine is not state_engine:
                await crm_engine.dispose()

    app = FastAPI(
        title="crmcluster controller",
        version="0.1.0",
        description="Runs a multi-server Sage CRM cluster: registry, multi-server operations, upgrades.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_docs(
        app,
        allowed=lambda request: authorize(request, Role.VIEWER),
        title="crmcluster controller",
        secured=lambda path: path.startswith("/api/"),
    )
    install_error_handlers(app, extra=API_ERRORS)
    install_guard(app, settings, authenticate=authn.authenticate, service="controller")
    # Each request's log lines (and the agent calls it makes) carry its request id.
    app.add_middleware(RequestContext, request_id_header=REQUEST_ID_HEADER)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        ctx: ControllerContext | None = getattr(app.state, "ctx", None)
        if ctx is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "tasks": ctx.tasks.names})

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text; needs a viewer (a token that may read)."""
        authorize(request, Role.VIEWER)
        ctx: ControllerContext = app.state.ctx
        try:
            await cluster.view(ctx)  # refreshes the node and warning gauges
            ctx.metrics.heartbeat_ages(await ctx.registry.list_nodes(), now=ctx.clock())
        except Exception as exc:  # noqa: BLE001 - whatever the gauges' sources do, a scrape answers
            log.debug("metrics: gauges not refreshed: %s", exc)
        await ctx.metrics.read_databases(state=ctx.state_engine, crm=ctx.crm_engine)
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    for router in ROUTERS:
        app.include_router(router)

    return app
