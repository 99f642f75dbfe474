"""The dashboard at the controller's ``/``: the cluster as a picture, live, for administrators.

Server-rendered with Jinja2 (``controller/templates``); plain CSS and JS from
``controller/static``; no build step and nothing fetched from outside the controller. The page
is made of sections (warnings, servers, distribution, upgrade, audit, maintenance), each a template
fragment. ``GET /dashboard/events`` (server-sent events) pushes the fragments that changed,
rendered by the same templates, about once a second; ``GET /dashboard/fragments`` answers
the same for browsers that poll instead.

Sign-in: ``/?token=<token>`` (the admin or operator token, or an API token of any role) opens a
server-side session and sets its cookie, then redirects to ``/`` (:mod:`controller.dashboard.session`);
a viewer's page has no buttons. The buttons (drain/undrain, pause/resume) call the JSON API itself
with that cookie and the dashboard header, so they are audited like any API call; signing out
(with the header too) ends the session on the server.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sse_starlette import EventSourceResponse, ServerSentEvent

from config.api_errors import Forbidden, NotFound, Unauthorized
from config.request_guard import client_address
from config.roles import Role
from controller.access.authn import token_principal
from controller.access.principal import Principal
from controller.context import ControllerContext
from controller.dashboard.feed import DashboardFeed, Snapshot
from controller.dashboard.session import (
    COOKIE_NAME,
    CSRF_HEADER,
    SESSION_TTL,
    cookie_principal,
    csrf_ok,
)
from controller.sse import event_source, sse_event

log = logging.getLogger("crmcluster.security")
HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
SECTIONS = ("warnings", "servers", "distribution", "upgrade", "audit")
#: The page may load and call nothing but this controller (the browser enforces it).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

#: The guide's order, for phases the plan names; unknown phases keep their own name and order.
PHASE_LABELS = {
    "preflight": "Plan and preflight",
    "freeze": "Freeze",
    "backup": "Back up",
    "baseline": "Baseline",
    "database": "Upgrade the database server",
    "database_server": "Upgrade the database server",
    "servers": "Upgrade the other servers",
    "other_servers": "Upgrade the other servers",
    "after": "After",
    "post": "After",
    "restore": "Restore the live environment",
}
ROLE_LABELS = {
    "database": "Database",
    "replication_engine": "Replication Engine",
    "dtls": "DTLS",
    "indexer": "Indexer",
    "escalation": "Escalation",
    "email_manager": "Email Manager",
}
STEP_DONE = frozenset(
    {"succeeded", "skipped", "failed", "cancelled", "interrupted", "restored", "done", "ok"}
)
STEP_FAILED = frozenset({"failed", "cancelled", "interrupted"})

router = APIRouter(include_in_schema=False)


def _hhmmss(value: Any) -> str:
    if not value:
        return "—"
    text = str(value)
    return text.split("T", 1)[1][:8] if "T" in text else text


def _when(value: Any) -> str:
    """``2026-12-06T01:00:00+00:00`` → ``12-06 01:00`` (dates matter for weekly tasks)."""
    text = str(value or "")
    if "T" not in text:
        return text or "—"
    day, _, time = text.partition("T")
    return f"{day[5:]} {time[:5]}"


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hhmmss"] = _hhmmss
    env.filters["when"] = _when
    env.filters["role_label"] = lambda r: ROLE_LABELS.get(str(r), str(r))
    env.filters["path"] = lambda v: urllib.parse.quote(str(v), safe="")
    return env


TEMPLATES = _templates()


# --- view models ------------------------------------------------------------------------------


def upgrade_view(run: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run as a timeline: phases in plan order with their steps, and per-server progress."""
    if not run:
        return {"run": None}
    plan = [s for s in (run.get("plan") or run.get("steps") or []) if isinstance(s, Mapping)]
    phases: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for step in plan:
        status = str(step.get("status") or "pending")
        for bucket, key in ((phases, str(step.get("phase") or "other")), (nodes, step.get("node"))):
            if not key:
                continue
            entry = bucket.setdefault(
                str(key), {"name": str(key), "steps": [], "done": 0, "failed": 0, "running": ""}
            )
            entry["steps"].append(step)
            entry["done"] += status in STEP_DONE
            entry["failed"] += status in STEP_FAILED
            if status in ("running", "awaiting_operator"):
                where = f" on {step['node']}" if bucket is phases and step.get("node") else ""
                entry["running"] = f"{step.get('action', '')}{where}"
    for entry in (*phases.values(), *nodes.values()):
        total = len(entry["steps"])
        entry["total"] = total
        entry["pct"] = round(100 * entry["done"] / total) if total else 0
        if entry["failed"]:
            entry["status"] = "failed"
        elif entry["running"]:
            entry["status"] = "running"
        elif total and entry["done"] == total:
            entry["status"] = "succeeded"
        elif any(str(s.get("status")) in STEP_DONE for s in entry["steps"]):
            entry["status"] = "running"
        else:
            entry["status"] = "pending"
    for entry in phases.values():
        entry["label"] = PHASE_LABELS.get(entry["name"], entry["name"].replace("_", " ").capitalize())
    done = sum(1 for s in plan if str(s.get("status")) in STEP_DONE)
    finished = [s for s in plan if s.get("finished_at") and str(s.get("status")) in STEP_DONE]
    finished.sort(key=lambda s: str(s.get("finished_at")), reverse=True)
    return {
        "run": run,
        "phases": list(phases.values()),
        "node_progress": list(nodes.values()),
        "done": done,
        "total": len(plan),
        "failed_steps": [s for s in plan if str(s.get("status")) in STEP_FAILED],
        "awaiting": [w for w in run.get("awaiting_operator") or [] if isinstance(w, Mapping)],
        "recent_steps": finished[:6],
    }


def distribution_view(snap: Snapshot) -> dict[str, Any]:
    rows = snap.distribution
    biggest = max([r["logged_on"] + r["pending"] for r in rows] + [1])
    bars = []
    for i, r in enumerate(rows):
        bars.append(
            {
                **r,
                "y": 10 + i * 34,
                "w": round(260 * r["logged_on"] / biggest, 1),
                "pw": round(260 * r["pending"] / biggest, 1),
            }
        )
    return {"bars": bars, "height": 20 + 34 * len(rows), "source": snap.distribution_source}


def render_sections(snap: Snapshot, *, actor: str, may_operate: bool = True) -> dict[str, str]:
    """Each section of the page as HTML, rendered by its template fragment (``may_operate``: with
    the operator's buttons: drain/undrain, pause/resume)."""
    common = {"actor": actor, "may_operate": may_operate}
    return {
        "warnings": TEMPLATES.get_template("_warnings.html").render(
            warnings=snap.warnings, problems=snap.problems, **common
        ),
        "servers": TEMPLATES.get_template("_servers.html").render(nodes=snap.nodes, **common),
        "distribution": TEMPLATES.get_template("_distribution.html").render(
            **distribution_view(snap), **common
        ),
        "upgrade": TEMPLATES.get_template("_upgrade.html").render(**upgrade_view(snap.run), **common),
        "audit": TEMPLATES.get_template("_audit.html").render(entries=snap.audit, **common),
        "maintenance": TEMPLATES.get_template("_maintenance.html").render(report=snap.maintenance, **common),
    }


# --- plumbing ---------------------------------------------------------------------------------


def _ctx(request: Request) -> ControllerContext:
    ctx: ControllerContext = request.app.state.ctx
    return ctx


def feed_for(request: Request) -> DashboardFeed:
    """The app's shared feed (tests may put their own on ``app.state.dashboard_feed``)."""
    ctx = _ctx(request)
    feed: DashboardFeed | None = getattr(request.app.state, "dashboard_feed", None)
    if feed is None or getattr(feed, "_ctx", None) is not ctx:
        feed = DashboardFeed(app=request.app, ctx=ctx)
        request.app.state.dashboard_feed = feed
    return feed


def _signin_page(message: str | None, status: int = 401) -> HTMLResponse:
    html = TEMPLATES.get_template("signin.html").render(message=message)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


async def _signed_in(request: Request, principal: Principal) -> RedirectResponse:
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        await _ctx(request).dashboard_sessions.open(principal),
        max_age=SESSION_TTL,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def _require_session(request: Request) -> Principal:
    principal = await cookie_principal(request)
    if principal is None:
        raise Unauthorized("sign in to the dashboard first: open /?token=<token>")
    return principal


def _may_operate(principal: Principal) -> bool:
    return principal.may(Role.OPERATOR)


async def _sign_in(request: Request, token: str) -> Response:
    """A session for ``token`` (not an agent's), or the sign-in page again; failures count as the
    API's do against brute force (429 once an address has failed too often)."""
    ctx = _ctx(request)
    limiter = request.app.state.auth_limiter
    client = client_address(request.scope)
    blocked = limiter.blocked_for(client)
    if blocked is not None:
        return _signin_page("Too many failed sign-ins from this address; try again later.", 429)
    principal = await token_principal(ctx, token.strip()) if token.strip() else None
    if principal is None or principal.role is None:
        block = limiter.failed(client)
        log.warning("dashboard: sign-in failed from %s", client)
        if block is not None:
            return _signin_page("Too many failed sign-ins from this address; try again later.", 429)
        return _signin_page("That token is not a valid admin, operator or viewer token.")
    return await _signed_in(request, principal)


# --- routes -----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def dashboard_page(request: Request, token: str | None = None) -> Response:
    if token is not None:
        return await _sign_in(request, token)
    signed = await cookie_principal(request)
    if signed is None:
        return _signin_page(None)
    snap = await feed_for(request).snapshot()
    html = TEMPLATES.get_template("dashboard.html").render(
        sections=render_sections(snap, actor=signed.name, may_operate=_may_operate(signed)),
        actor=signed.name,
        role=signed.role.value if signed.role else "",
        install_name=_ctx(request).settings.install_name,
        csrf_header=CSRF_HEADER,
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.post("/dashboard/signin")
async def dashboard_signin(request: Request) -> Response:
    form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    return await _sign_in(request, token)


@router.post("/dashboard/signout")
async def dashboard_signout(request: Request) -> Response:
    """End the session on the server (its cookie stops working everywhere) and drop the cookie.
    Needs the dashboard's CSRF header: another site's page cannot sign a user out."""
    if not csrf_ok(request):
        raise Forbidden(f"signing out needs the {CSRF_HEADER} header (the dashboard's page sends it)")
    await _ctx(request).dashboard_sessions.close(request.cookies.get(COOKIE_NAME))
    response = JSONResponse({"signed_out": True}, headers={"Cache-Control": "no-store"})
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/dashboard/fragments")
async def dashboard_fragments(request: Request) -> JSONResponse:
    principal = await _require_session(request)
    snap = await feed_for(request).snapshot()
    sections = render_sections(snap, actor=principal.name, may_operate=_may_operate(principal))
    return JSONResponse({"sections": sections}, headers={"Cache-Control": "no-store"})


@router.get("/dashboard/events")
async def dashboard_events(request: Request) -> EventSourceResponse:
    principal = await _require_session(request)
    feed = feed_for(request)
    sessions = _ctx(request).dashboard_sessions
    cookie = request.cookies.get(COOKIE_NAME)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        # The response stops this generator when the browser goes away, and sends the keep-alives.
        sent: dict[str, str] = {}
        yield sse_event(retry_ms=2000)
        while True:
            if await sessions.read(cookie) is None:
                # Signed out (or its token revoked) since: the stream ends with the session.
                yield sse_event({"signed_out": True}, event="signed_out")
                return
            sections = render_sections(
                await feed.snapshot(), actor=principal.name, may_operate=_may_operate(principal)
            )
            changed = {k: v for k, v in sections.items() if sent.get(k) != v}
            if changed:
                sent.update(changed)
                yield sse_event({"sections": changed}, event="sections")
            await asyncio.sleep(feed.interval)

    return event_source(stream(), cache_control="no-store")


@router.get("/static/dashboard/{name}")
async def dashboard_static(name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(
        STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"}
    )
