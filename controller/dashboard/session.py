"""The dashboard's sign-in: an HttpOnly session cookie standing for the admin or operator token.

The demo's ``dashboard_url`` is ``/?token=<admin token>``: the dashboard checks the token, sets
the cookie and redirects to ``/`` so the token leaves the address bar. The cookie holds no token:
it is a Fernet token (``CRMCLUSTER_SECRET_KEY``) of ``{"actor", "fp", "iat"}``, where ``fp`` is a
hash of the token it was issued for, so rotating a token signs its sessions out. It expires
after :data:`SESSION_TTL` seconds.

:func:`cookie_actor` lets the JSON API accept the cookie for the dashboard's own actions
(``deps.require_operator`` calls it when no bearer token matched). Because a browser sends
cookies on cross-site requests too, a cookie counts for an unsafe method (POST …) only when the
request also carries the header :data:`CSRF_HEADER`, which a page of another site cannot add
without a CORS pre-flight the controller never grants.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import HTTPConnection

from config.secrets import secret_hash
from config.settings import ControllerSettings

Actor = Literal["admin", "operator"]

COOKIE_NAME = "crmcluster_session"
CSRF_HEADER = "x-crmcluster-dashboard"
SESSION_TTL = 12 * 3600
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _fernet(settings: ControllerSettings) -> Fernet:
    assert settings.secret_key is not None  # ControllerSettings requires it
    return Fernet(settings.secret_key.get_secret_value().encode())


def _tokens(settings: ControllerSettings) -> dict[Actor, str]:
    tokens: dict[Actor, str] = {"admin": settings.admin_token.get_secret_value()}
    if settings.operator_token is not None:
        tokens["operator"] = settings.operator_token.get_secret_value()
    return tokens


def token_actor(settings: ControllerSettings, token: str | None) -> Actor | None:
    """Who ``token`` signs in as (compared in constant time), or None."""
    if not token:
        return None
    found: Actor | None = None
    for actor, known in _tokens(settings).items():
        if hmac.compare_digest(token.strip().encode(), known.encode()):
            found = actor
    return found


def issue_session(settings: ControllerSettings, actor: Actor, *, now: float | None = None) -> str:
    """The cookie value for a session of ``actor``."""
    payload = {"actor": actor, "fp": secret_hash(_tokens(settings)[actor]), "iat": int(now or time.time())}
    return _fernet(settings).encrypt_at_time(json.dumps(payload).encode(), int(now or time.time())).decode()


def read_session(
    settings: ControllerSettings, value: str | None, *, now: float | None = None
) -> Actor | None:
    """The actor of a cookie value: None when it is forged, expired or its token was rotated."""
    if not value:
        return None
    try:
        raw = _fernet(settings).decrypt_at_time(value.encode(), SESSION_TTL, int(now or time.time()))
        payload = json.loads(raw)
    except (InvalidToken, ValueError, TypeError):
        return None
    actor = payload.get("actor") if isinstance(payload, dict) else None
    if actor not in ("admin", "operator"):
        return None
    token = _tokens(settings).get(actor)
    if token is None or not hmac.compare_digest(str(payload.get("fp", "")), secret_hash(token)):
        return None
    result: Actor = actor
    return result


def cookie_actor(request: HTTPConnection) -> Actor | None:
    """The actor of the request's dashboard session cookie, if it may count for this request."""
    value = request.cookies.get(COOKIE_NAME)
    if not value:
        return None
    method = str(request.scope.get("method", "GET")).upper()
    if method not in _SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        return None
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        return None
    settings: ControllerSettings = ctx.settings
    return read_session(settings, value)
