"""Authentication of a controller request, before its body is read (:mod:`config.request_guard`).

``/api/v1/…`` needs a credential: a bearer token (the bootstrap admin or operator token from
settings, or a node's own agent token) or the dashboard's session cookie (with the CSRF header for an
unsafe method). Everything else — ``/healthz``, the dashboard's pages, which sign in by
themselves — is open here and checks what it needs itself. What the credential may do (its role)
is the routes' business (:mod:`controller.api.deps`): 401 here, 403 there.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import HTTPConnection

from config.request_guard import OPEN, Refused, Scope, bearer_token
from controller.access.node_tokens import PREFIX as NODE_PREFIX
from controller.access.principal import Principal, Role
from controller.context import ControllerContext
from controller.dashboard.session import cookie_actor


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
    if found is None and token.startswith(NODE_PREFIX):
        node = await ctx.node_tokens.node_for(token)
        if node is not None:
            found = Principal(name=f"agent:{node}", role=None, kind="agent", node=node)
    return found


async def authenticate(scope: Scope) -> Any:
    path: str = scope.get("path", "")
    if not path.startswith("/api/"):
        return OPEN
    ctx: ControllerContext | None = getattr(scope["app"].state, "ctx", None)
    if ctx is None:
        return OPEN  # starting: the route answers 503
    token = bearer_token(scope)
    if token is not None:
        principal = await token_principal(ctx, token)
        return principal if principal is not None else Refused("unknown bearer token")
    actor = cookie_actor(HTTPConnection(scope))
    if actor is not None:
        return Principal(name=actor, role=Role(actor), kind="session")
    return Refused("no bearer token")
