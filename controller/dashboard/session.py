"""The dashboard's sign-in: an HttpOnly session cookie standing for a token, kept on the server.

Signing in with a token (the bootstrap admin or operator token, or an API token of any role: a
viewer's dashboard shows no buttons) opens a session: the cookie holds a random id (256 bits);
the state database's ``dashboard_sessions`` holds only the id's hash, who it is, the role, the
credential it was opened with and when it expires (:data:`SESSION_TTL`). So a session ends on
the server:

- signing out (``POST /dashboard/signout``, with the CSRF header) deletes it;
- revoking its API token deletes it (:meth:`config.api_tokens.ApiTokens.revoke`);
- rotating a bootstrap token ends the sessions opened with the old one (the hash kept beside the
  session no longer matches).

A copied cookie works only until one of those happens. Because a browser sends cookies on
cross-site requests too, a cookie counts for an unsafe method (POST …) only when the request also
carries the header :data:`CSRF_HEADER`, which a page of another site cannot add without a CORS
pre-flight the controller never grants — and that holds for signing out too.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from config.api_tokens import RESERVED_NAMES
from config.roles import Role
from config.secrets import secret_hash
from config.settings import ControllerSettings
from config.state_schema import dashboard_sessions, utcnow
from controller.access.principal import Principal

COOKIE_NAME = "crmcluster_session"
CSRF_HEADER = "x-crmcluster-dashboard"
SESSION_TTL = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def bootstrap_hash(settings: ControllerSettings, name: str) -> str | None:
    """The hash of the bootstrap token called ``name`` (``admin``/``operator``), if it is set."""
    if name == "admin":
        return secret_hash(settings.admin_token.get_secret_value())
    if name == "operator" and settings.operator_token is not None:
        return secret_hash(settings.operator_token.get_secret_value())
    return None


class DashboardSessions:
    def __init__(
        self, engine: AsyncEngine, settings: ControllerSettings, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock

    async def open(self, principal: Principal) -> str:
        """A new session for ``principal`` (a token's); the cookie value, returned, never stored."""
        assert principal.role is not None and principal.kind == "token"
        value = secrets.token_urlsafe(32)
        now = self.clock()
        async with self.engine.begin() as conn:
            # Sessions past their time go when new ones come: the table stays small.
            await conn.execute(delete(dashboard_sessions).where(dashboard_sessions.c.expires_at < now))
            await conn.execute(
                dashboard_sessions.insert().values(
                    id_hash=secret_hash(value),
                    actor=principal.name,
                    role=principal.role.value,
                    credential=principal.name,
                    credential_hash=bootstrap_hash(self.settings, principal.name),
                    created_at=now,
                    expires_at=now + timedelta(seconds=SESSION_TTL),
                )
            )
        return value

    async def read(self, value: str | None) -> Principal | None:
        """The principal of a cookie value: None when unknown, expired, signed out or revoked."""
        if not value or len(value) > 200:
            return None
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(dashboard_sessions).where(dashboard_sessions.c.id_hash == secret_hash(value))
                )
            ).first()
        if row is None or row.expires_at <= self.clock():
            return None
        if row.credential in RESERVED_NAMES:
            now_hash = bootstrap_hash(self.settings, row.credential)
            if now_hash is None or not hmac.compare_digest(now_hash, row.credential_hash or ""):
                return None  # that bootstrap token was rotated (or unset) since
        return Principal(name=row.actor, role=Role(row.role), kind="session")

    async def close(self, value: str | None) -> bool:
        """End the session (signing out); True when there was one."""
        if not value or len(value) > 200:
            return False
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(dashboard_sessions).where(dashboard_sessions.c.id_hash == secret_hash(value))
            )
        return bool(result.rowcount)


def csrf_ok(request: HTTPConnection) -> bool:
    """A safe method, or an unsafe one carrying the dashboard's header (no other site can add it)."""
    method = str(request.scope.get("method", "GET")).upper()
    return method in SAFE_METHODS or request.headers.get(CSRF_HEADER) == "1"


async def cookie_principal(request: HTTPConnection) -> Principal | None:
    """The principal of the request's dashboard session cookie, if it may count for this request."""
    value = request.cookies.get(COOKIE_NAME)
    if not value or not csrf_ok(request):
        return None
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        return None
    sessions: DashboardSessions = ctx.dashboard_sessions
    return await sessions.read(value)
