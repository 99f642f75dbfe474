"""The balancer's small HTTP API (FastAPI): ``/api/v1/servers``, ``/healthz``, ``/metrics``.

``/api/v1/servers`` is open when no admin token is set, else it needs ``Authorization: Bearer``.
``/healthz`` and ``/metrics`` need no token (load balancers and Prometheus call them).
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
from config.api_errors import Unauthorized, check_bearer, error_response


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


def build_router(
    *,
    pool: ServerPool,
    metrics: BalancerMetrics,
    admin_token: str | None,
    retry_after: int,
    clock: Callable[[], float],
) -> APIRouter:
    router = APIRouter()

    def require_admin(request: Request) -> None:
        if admin_token and check_bearer(request, admin_token) is None:
            raise Unauthorized("a valid admin bearer token is required")

    @router.get("/api/v1/servers", response_model=ServersOut, dependencies=[Depends(require_admin)])
    async def servers() -> dict[str, Any]:
        """The configured servers as the balancer sees them, in ``ServerNames`` order."""
        return {"servers": pool.servers_view(now=clock()), "stale": pool.stale}

    @router.get("/healthz")
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

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
