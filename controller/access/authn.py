"""Authentication of a controller request, before its body is read (:mod:`config.request_guard`).

``/api/v1/…`` and ``/metrics`` need a credential, and so do ``/docs`` and ``/openapi.json`` when
the request does not come from the controller's own machine (loopback). A credential is a bearer
token — the bootstrap admin or operator token from settings, an API token
(:mod:`config.api_tokens`: viewer, operator or admin), or a node's own agent token — or the
dashboard's session cookie (with the CSRF header for an unsafe method). Everything else —
``/healthz``, the dashboard's pages, which sign in by themselves — is open here and checks what it
needs itself. What the credential may do (its role) is the routes' business
(:mod:`controller.api.deps`): 401 here, 403 there.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import HTTPConnection

from config.api_docs import DOC_PATHS
from config.api_tokens import PREFIX as API_PREFIX
from config.request_guard import OPEN, Refused, Scope, bearer_token, is_loopback
from controller.access.node_tokens import PREFIX as NODE_PREFIX
from controller.access.principal import Principal, Role
from controller.context import ControllerContext
from controller.dashboard.session import cookie_principal


def _match(given: str, known: str | None) -> bool:
    return known is not None and hmac.compare_digest(given.encode(), known.encode())


async def token_principal(ctx: ControllerContext, token: str) -> Principal | None:
    """The principal of a bearer token, or None when it matches nothing."""
    s = ctx.settings
    found: Principal | None = None
    # Both comparisons run, so the time taken does not tell which token came close.
    if _match(token, s.admin_token.get_secret_value()):
        found = Principal(name="admin", role=Role.ADMIN)
    if _match(token, s.operator_token.get_secret_value() if s.operator_token else None):
        found = Principal(name="operator", role=Role.OPERATOR)
    if found is None and token.startswith(API_PREFIX):
        record = await ctx.api_tokens.lookup(token)
        if record is not None:
            found = Principal(name=record.name, role=record.role)
    if found is None and token.startswith(NODE_PREFIX):
        node = await ctx.node_tokens.node_for(token)
        if node is not None:
            found = Principal(name=f"agent:{node}", role=None, kind="agent", node=node)
    return found


def needs_credential(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    if path.startswith("/api/") or path == "/metrics":
        return True
    return path in DOC_PATHS and not is_loopback(scope)


async def authenticate(scope: Scope) -> Any:
    if not needs_credential(scope):
        return OPEN
    ctx: ControllerContext | None = getattr(scope["app"].state, "ctx", None)
    if ctx is None:
        return OPEN  # starting: the route answers 503
    token = bearer_token(scope)
    if token is not None:
        principal = await token_principal(ctx, token)
        return principal if principal is not None else Refused("unknown bearer token")
    session = await cookie_principal(HTTPConnection(scope))
    if session is not None:
        return session
    return Refused("no bearer token")
