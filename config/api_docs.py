"""``/openapi.json`` and ``/docs`` of a service, closed by default: open to the service's own
machine (loopback), a credential's business from anywhere else.

The service's guard (:mod:`config.request_guard`) already refused a request from another machine
that carries no valid credential (401, counted against brute force); ``allowed(request)`` — the
service's own rule — then says whether the credential it carries may read the description (403
otherwise). The Swagger page is FastAPI's; it loads the description from ``/openapi.json`` with the
browser's credentials (the dashboard's session cookie on the controller).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

DOC_PATHS = frozenset({"/docs", "/openapi.json"})


def from_loopback(request: Request) -> bool:
    client = request.scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0])).is_loopback
    except ValueError:
        return False


def install_docs(
    app: FastAPI,
    *,
    allowed: Callable[[Request], Any],
    title: str,
    secured: Callable[[str], bool] = lambda _path: False,
) -> None:
    """Serve ``/openapi.json`` and ``/docs`` (build ``app`` with ``docs_url=None, openapi_url=None``).
    The operations of the paths ``secured(path)`` names say they need a bearer token."""
    plain_openapi = app.openapi

    def openapi_with_security() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = plain_openapi()
        spec.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "Authorization: Bearer <token>",
        }
        for path, operations in spec.get("paths", {}).items():
            if secured(path):
                for operation in operations.values():
                    if isinstance(operation, dict):
                        operation["security"] = [{"bearer": []}]
        app.openapi_schema = spec
        return spec

    app.openapi = openapi_with_security  # type: ignore[method-assign]

    def check(request: Request) -> None:
        if getattr(request.state, "principal", None) is None and from_loopback(request):
            return
        allowed(request)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        check(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        check(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=title)
