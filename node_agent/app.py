"""The node agent's ASGI app, built once from its settings by :func:`create_app`.

    GET  /v1/status                       NodeStatus
    POST /v1/operations                   {op_id, action, params} -> 202 OperationRecord
    GET  /v1/operations                   the latest records (newest first)
    GET  /v1/operations/{op_id}           OperationRecord (404 when unknown)
    POST /v1/operations/{op_id}/cancel    OperationRecord
    POST /v1/operations/{op_id}/confirm   {note} -> OperationRecord (an operation awaiting an operator)
    GET  /healthz                         no token needed
    GET  /metrics                         Prometheus text (node_agent.metrics), no token needed

Every ``/v1`` request carries ``Authorization: Bearer <CRMCLUSTER_AGENT_TOKEN>`` (compared in
constant time). The lifespan starts the driver (the sandbox's stand-in web server), reads the
operation journal (what was running reads ``interrupted``), opens HAProxy's agent-check port when
``CRMCLUSTER_AGENT_CHECK_PORT`` is set (:mod:`node_agent.agent_check`), and runs the heartbeat,
the IIS watcher and (with the agent-check) the poll of the node's state as supervised tasks;
shutdown stops accepting, interrupts running operations, stops the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from config.aiotasks import TaskSupervisor
from config.api_docs import DOC_PATHS, install_docs
from config.api_errors import (
    API_ERROR_RESPONSES,
    Conflict,
    NotFound,
    Unauthorized,
    Unavailable,
    install_error_handlers,
)
from config.database import parse_url
from config.errors import SettingError
from config.logs import RequestContext
from config.request_guard import OPEN, Refused, Scope, bearer_token, install_guard, is_loopback
from config.secrets import register_secret
from config.settings import AgentSettings
from config.tls import PeerTrust
from node_agent.agent_check import AgentCheck, AgentCheckServer, WebHealth
from node_agent.assignment import AssignmentKeeper, AssignmentPoller
from node_agent.drivers.base import HostDriver
from node_agent.heartbeat import HeartbeatSender, Sleep
from node_agent.iis_watch import IisResetWatcher
from node_agent.journal import OperationJournal
from node_agent.metrics import AgentMetrics
from node_agent.operations import (
    AgentStopping,
    Clock,
    NotAwaiting,
    OperationConflict,
    OperationManager,
    TooManyOperations,
    UnknownOperation,
    utcnow,
)
from node_agent.protocol import (
    OPERATION_ID_HEADER,
    REQUEST_ID_HEADER,
    RUN_ID_HEADER,
    Action,
    ConfirmRequest,
    NodeStatus,
    OperationRecord,
    OperationSubmission,
    Params,
)
from node_agent.runner import CommandRunner, SubprocessRunner


def build_driver(settings: AgentSettings, *, runner: CommandRunner) -> HostDriver:
    if settings.driver == "sandbox":
        from node_agent.drivers.sandbox.host import SandboxDriver

        return SandboxDriver(settings)
    from node_agent.drivers.windows import WindowsDriver

    windows: HostDriver = WindowsDriver.for_settings(settings, runner=runner)
    return windows


def create_app(
    settings: AgentSettings,
    *,
    driver: HostDriver | None = None,
    clock: Clock | None = None,
    controller_transport: httpx.AsyncBaseTransport | None = None,
    runner: CommandRunner | None = None,
    sleep: Sleep | None = None,
    background: bool = True,
) -> FastAPI:
    """Build the agent. Test hooks: ``driver`` (a ready driver), ``clock``, ``controller_transport``
    (heartbeats to an in-process controller), ``runner`` (a :class:`RecordingRunner`), ``sleep``
    (the loops' waits), ``background=False`` (no heartbeat/IIS-watch loops: tests drive them)."""
    for secret in (settings.agent_token, settings.secret_key, settings.warmup_password):
        register_secret(secret)
    with contextlib.suppress(SettingError):
        register_secret(parse_url(settings.crm_url).password)  # an SQL password in the URL
    token = settings.agent_token.get_secret_value()
    now = clock or utcnow
    run_cmd = runner or SubprocessRunner()
    host_driver = driver or build_driver(settings, runner=run_cmd)
    journal = OperationJournal(settings.data_dir / "agent" / "operations")
    metrics = AgentMetrics()
    operations = OperationManager(
        on_finish=metrics.operation_finished,
        driver=host_driver,
        journal=journal,
        runner=run_cmd,
        clock=now,
        keep=timedelta(days=settings.journal_keep_days),
    )
    watcher = IisResetWatcher(
        driver=host_driver,
        operations=operations,
        interval=settings.iis_watch_interval,
        **({"sleep": sleep} if sleep else {}),
    )
    supervisor = TaskSupervisor(f"agent {settings.name}")
    keeper = AssignmentKeeper(settings.data_dir / "agent" / "assignment.json", clock=now)
    # How the agent verifies an https controller (its CA, or its certificate's fingerprint).
    trust = (
        PeerTrust(
            settings.controller_url,
            ca_file=settings.controller_ca_file,
            fingerprint=settings.controller_fingerprint,
        )
        if settings.controller_url
        else None
    )
    agent_check: AgentCheckServer | None = None
    poller: AssignmentPoller | None = None
    if settings.agent_check_port is not None:
        agent_check = AgentCheckServer(
            AgentCheck(
                keeper=keeper,
                health=WebHealth(host_driver.status),
                slow_start=settings.agent_check_slow_start,
            ),
            host=settings.agent_check_host,
            port=settings.agent_check_port,
        )
        if settings.controller_url:
            poller = AssignmentPoller(
                controller_url=settings.controller_url,
                name=settings.name or "agent",
                token=token,
                keeper=keeper,
                interval=settings.state_poll_interval,
                max_backoff=settings.heartbeat_max_backoff,
                transport=controller_transport,
                sleep=sleep or asyncio.sleep,
                trust=trust,
            )
    if agent_check is not None:
        metrics.check = agent_check.check
    metrics.keeper = keeper
    heartbeat: HeartbeatSender | None = None
    if settings.controller_url:
        heartbeat = HeartbeatSender(
            controller_url=settings.controller_url,
            name=settings.name or "agent",
            token=token,
            status=host_driver.status,
            agent_url=settings.agent_url,
            interval=settings.heartbeat_interval,
            max_backoff=settings.heartbeat_max_backoff,
            clock=now,
            transport=controller_transport,
            on_answer=keeper.heard,
            sleep=sleep or asyncio.sleep,
            trust=trust,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        operations.load()
        keeper.load()
        await host_driver.start()
        if agent_check is not None:
            await agent_check.start()
        if background:
            supervisor.start(
                "iis-watch", watcher.run, restart=True, restart_delay=settings.iis_watch_interval
            )
            if heartbeat is not None:
                supervisor.start(
                    "heartbeat", heartbeat.run, restart=True, restart_delay=settings.heartbeat_interval
                )
            if poller is not None:
                supervisor.start(
                    "assignment", poller.run, restart=True, restart_delay=settings.state_poll_interval
                )
        try:
            yield
        finally:
            if agent_check is not None:
                await agent_check.stop()
            await supervisor.cancel_all()
            await operations.shutdown(timeout=5)
            await host_driver.stop()

    app = FastAPI(
        title=f"crmcluster agent {settings.name}",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_docs(
        app,
        allowed=lambda _request: None,
        title=f"crmcluster agent {settings.name}",
        secured=lambda path: path.startswith("/v1/"),
    )
    install_error_handlers(app)
    app.state.settings = settings
    app.state.driver = host_driver
    app.state.operations = operations
    app.state.watcher = watcher
    app.state.heartbeat = heartbeat
    metrics.heartbeat = heartbeat
    app.state.metrics = metrics
    app.state.assignment = keeper
    app.state.assignment_poller = poller
    app.state.agent_check = agent_check

    async def authenticate(scope: Scope) -> Any:
        """``/v1/…`` needs this node's token (compared in constant time), before the body is read;
        so do ``/docs`` and ``/openapi.json`` from another machine."""
        path = scope.get("path", "")
        if not path.startswith("/v1/") and (path not in DOC_PATHS or is_loopback(scope)):
            return OPEN
        given = bearer_token(scope)
        needed = "this node's agent token is required (Authorization: Bearer …)"
        if given is None:
            return Refused("no bearer token", needed)
        if not hmac.compare_digest(given.encode(), token.encode()):
            return Refused("wrong bearer token", needed)
        return "controller"

    install_guard(app, settings, authenticate=authenticate, service=f"agent {settings.name}")
    # Outermost: the controller's ids (request, upgrade run, operation) on every log line of the request and
    # of the operations it starts (their tasks copy the
    # context), the guard's refusals included.
    app.add_middleware(
        RequestContext,
        request_id_header=REQUEST_ID_HEADER,
        headers={RUN_ID_HEADER: "run_id", OPERATION_ID_HEADER: "op_id"},
    )

    async def require_token(request: Request) -> None:
        if getattr(request.state, "principal", None) is None:
            raise Unauthorized("a valid agent token is required (Authorization: Bearer …)")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=API_ERROR_RESPONSES)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @v1.get("/status", response_model=NodeStatus)
    async def status() -> NodeStatus:
        return await host_driver.status()

    @v1.post("/operations", status_code=202, response_model=OperationRecord)
    async def submit(body: Annotated[OperationSubmission, Body()]) -> JSONResponse:
        """Start an operation; its body's schema is the action's own (``action`` tells which)."""
        params = getattr(body, "params")  # noqa: B009  # every submission model has op_id, action, params
        assert isinstance(params, Params)
        try:
            record = operations.submit(getattr(body, "op_id"), Action(getattr(body, "action")), params)  # noqa: B009
        except OperationConflict as exc:
            raise Conflict(str(exc)) from None
        except (AgentStopping, TooManyOperations) as exc:
            raise Unavailable(str(exc)) from None
        await operations.journalled()  # accepted only once it is on disk
        return JSONResponse(record.model_dump(mode="json"), status_code=202)

    @v1.get("/operations", response_model=list[OperationRecord])
    async def list_operations(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[OperationRecord]:
        return operations.records(limit=limit)

    @v1.get("/operations/{op_id}", response_model=OperationRecord)
    async def get_operation(op_id: str) -> OperationRecord:
        try:
            return operations.get(op_id)
        except UnknownOperation:
            raise NotFound(f"no operation {op_id!r} on this agent") from None

    @v1.post("/operations/{op_id}/cancel", response_model=OperationRecord)
    async def cancel_operation(op_id: str) -> OperationRecord:
        try:
            return operations.cancel(op_id)
        except UnknownOperation:
            raise NotFound(f"no operation {op_id!r} on this agent") from None

    @v1.post("/operations/{op_id}/confirm", response_model=OperationRecord)
    async def confirm_operation(op_id: str, body: ConfirmRequest) -> OperationRecord:
        try:
            return operations.confirm(op_id, body.note)
        except UnknownOperation:
            raise NotFound(f"no operation {op_id!r} on this agent") from None
        except NotAwaiting as exc:
            raise Conflict(str(exc)) from None

    app.include_router(v1)
    return app
