"""The balancer's small HTTP API (FastAPI): ``/api/v1/servers``, ``/healthz``, ``/metrics``, and
the OpenAPI description of its logon routes.

``/api/v1/servers`` is open when no admin token is set, else it needs ``Authorization: Bearer``
(the admin token, or any API token of the controller's). ``/metrics`` always needs a token — the
admin token or an API token: Prometheus scrapes with a viewer's. ``/healthz`` needs none (load
balancers call it). The guard (:mod:`config.request_guard`) checked the token before any route
ran; the routes only look at what it found.

The logon routes themselves are answered in front of FastAPI (:mod:`balancer.logon`); the routes
declared here for them only describe those answers in ``/openapi.json`` and are never reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from balancer.metrics import BalancerMetrics
from balancer.pool import ServerPool
from config.api_errors import ERROR_SCHEMA_REF, Unauthorized, error_response, error_responses


class ServerOut(BaseModel):
    name: str
    fqdn: str
    state: str
    weight: float
    logged_on: int
    pending: int


class ServersOut(BaseModel):
    servers: list[ServerOut]
    stale: bool


_REDIRECT = {
    "description": "Sent to the chosen server's logon page (a POST stays a POST).",
    "headers": {
        "Location": {
            "description": "{scheme}://{FQ entry}/{install}/eware.dll/Logon[?query]",
            "schema": {"type": "string"},
        },
        "X-CRM-Server": {"description": "The chosen server's name", "schema": {"type": "string"}},
    },
}
_UNAVAILABLE = {
    "description": "No CRM server can take a logon now (a page for people; Retry-After).",
    "content": {"text/html": {"schema": {"type": "string"}}},
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
}


def _logon_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {307: _REDIRECT, 503: _UNAVAILABLE, **error_responses(*codes)}


def build_router(
    *,
    pool: ServerPool,
    metrics: BalancerMetrics,
    admin_token: str | None,
    retry_after: int,
    clock: Callable[[], float],
    install: str = "crm",
) -> APIRouter:
    router = APIRouter()

    def require_token_when_set(request: Request) -> None:
        if admin_token and getattr(request.state, "principal", None) is None:
            raise Unauthorized("a valid bearer token is required")

    def require_token(request: Request) -> None:
        if getattr(request.state, "principal", None) is None:
            raise Unauthorized("a valid bearer token is required (a viewer's is enough)")

    @router.get(
        "/api/v1/servers",
        response_model=ServersOut,
        dependencies=[Depends(require_token_when_set)],
        responses=error_responses(401, 429),
    )
    async def servers() -> dict[str, Any]:
        """The configured servers as the balancer sees them, in ``ServerNames`` order."""
        return {"servers": pool.servers_view(now=clock()), "stale": pool.stale}

    @router.get("/healthz", responses={503: {"description": "Starting", **ERROR_SCHEMA_REF}})
    async def healthz() -> Response:
        """200 once the first configuration and counts are loaded; ``stale`` in degraded mode."""
        if not pool.ready:
            return error_response(
                503,
                "starting",
                "the first configuration and counts are not loaded yet",
                {"config_loaded": pool.config_loaded, "counts_loaded": pool.counts_loaded},
                {"Retry-After": str(retry_after)},
            )
        return JSONResponse({"status": "ok", "stale": pool.stale})

    @router.get(
        "/metrics",
        dependencies=[Depends(require_token)],
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **error_responses(401, 429),
        },
    )
    async def prometheus() -> Response:
        """Prometheus text (a token needed: the admin token, or an API token of any role)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # The logon routes, described (balancer.logon answers them before FastAPI routes anything).
    def never() -> Response:  # pragma: no cover - the logon route answers first
        raise AssertionError("answered by balancer.logon")

    for path in (f"/{install}", f"/{install}/"):
        router.add_api_route(
            path,
            never,
            methods=["GET"],
            summary="Start a logon: sent to the server with the fewest logged-on users",
            responses=_logon_responses(400, 405),
            response_class=Response,
            tags=["logon"],
        )
    router.add_api_route(
        f"/{install}/eware.dll/Logon",
        never,
        methods=["GET"],
        summary="The logon page: sent to the chosen server's (query string kept)",
        responses=_logon_responses(400, 405),
        response_class=Response,
        tags=["logon"],
    )
    router.add_api_route(
        f"/{install}/eware.dll/Logon",
        never,
        methods=["POST"],
        summary="The logon form: sent on to the chosen server (sticky to the user's session)",
        responses=_logon_responses(400, 405, 413),
        response_class=Response,
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"User_Logon": {"type": "string", "maxLength": 255}},
                        }
                    }
                },
            }
        },
        tags=["logon"],
    )
    return router
