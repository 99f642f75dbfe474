"""The one JSON error shape every crmcluster HTTP API answers with, and the handlers that make it.

    {"error": {"code": "not_found", "message": "no node named 'crm9'", "details": {...}}}

Services raise :class:`ApiError` subclasses (or their own domain errors, mapped at the edge with
:func:`install_error_handlers`'s ``extra`` argument); nothing raises ``HTTPException`` deep inside.
Bad input is a 4xx; an unexpected error is a 500 with a generic message, never a traceback.

    ApiError                 (status 400 unless a subclass says otherwise)
    ├── InvalidInput         422  the body or params break a rule
    ├── Unauthorized         401  no or wrong bearer token
    ├── Forbidden            403  the token may not do this
    ├── NotFound             404
    ├── Conflict             409  the request clashes with the current state
    └── Unavailable          503  a dependency did not answer; retry later
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from config.errors import DatabaseUnavailable, SysParamsError
from config.secrets import redact, redact_mapping

log = logging.getLogger("crmcluster.api")


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code


class InvalidInput(ApiError):
    status_code = 422
    code = "invalid"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Unavailable(ApiError):
    status_code = 503
    code = "unavailable"


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    """The one JSON error shape: ``{"error": {"code", "message", "details"}}``."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


ERROR_SCHEMA_REF: dict[str, Any] = {"model": ErrorOut}
_DESCRIPTIONS = {
    400: "Bad request (a malformed header or query)",
    401: "No bearer token, or one that matches nothing",
    403: "The token's role may not do this",
    404: "No such thing",
    405: "Method not allowed (see Allow)",
    409: "Clashes with the current state",
    413: "The request body is larger than the limit",
    422: "The request breaks a rule (which field, why)",
    429: "Too many failed authentications from this address (see Retry-After)",
    503: "A dependency did not answer; retry later",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the JSON error schema."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"description": _DESCRIPTIONS.get(code, "Error"), **ERROR_SCHEMA_REF}
        if code == 429:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        if code == 405:
            entry["headers"] = {"Allow": {"schema": {"type": "string"}}}
        out[code] = entry
    return out


#: What every authenticated JSON API route may answer besides its success.
API_ERROR_RESPONSES = error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": redact(message), "details": redact_mapping(details)}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=dict(headers or {}))


def check_bearer(request: Request, *tokens: str | None) -> str | None:
    """The token (of ``tokens``) the request's bearer matches, compared in constant time; else None."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    matched = None
    for token in tokens:
        if token and hmac.compare_digest(given.strip().encode(), token.encode()):
            matched = token
    return matched


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path (Starlette names only the
    first route whose path matches, so ``GET`` and ``PUT`` on one path would say ``Allow: GET``)."""
    methods: set[str] = set()
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        # Every route kind answers matches(), routers included in the app too (FastAPI's
        # included routers hold their routes themselves): a full match allows the method.
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            methods.add(method)
    return sorted(methods)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _message(error: Mapping[str, Any]) -> str:
    """The error's message; a discriminated union's (the agent's ``action``) says what is unknown."""
    ctx = error.get("ctx") or {}
    name = str(ctx.get("discriminator", "")).strip("'")
    if error.get("type") == "union_tag_invalid":
        return f"unknown {name} {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if error.get("type") == "union_tag_not_found":
        return f"{name}: required (unknown action or none given)"
    return str(error.get("msg", ""))


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": _message(e), "type": e.get("type", "")}
        for e in exc.errors()
    ]


def install_error_handlers(
    app: FastAPI, *, extra: Mapping[type[Exception], Callable[[Exception], ApiError]] | None = None
) -> None:
    """Map our errors, validation errors and anything unexpected to the JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error_response(exc.status_code, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body",)) or "request"
        return error_response(422, "invalid", f"{where}: {first['msg']}", details)

    @app.exception_handler(SysParamsError)
    async def _sysparams(_: Request, exc: SysParamsError) -> JSONResponse:
        return error_response(422, "invalid", exc.message, {"field": exc.field})

    @app.exception_handler(DatabaseUnavailable)
    async def _db(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return error_response(503, "unavailable", str(exc), None, {"Retry-After": "2"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), None, headers
        )

    for exc_type, mapper in (extra or {}).items():

        def _make(m: Callable[[Exception], ApiError]) -> Callable[[Request, Exception], Any]:
            async def _handler(request: Request, exc: Exception) -> JSONResponse:
                return await _api(request, m(exc))

            return _handler

        app.add_exception_handler(exc_type, _make(mapper))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s: %s", request.method, request.url.path, redact(repr(exc)))
        return error_response(500, "internal", "internal error; see the service log")
