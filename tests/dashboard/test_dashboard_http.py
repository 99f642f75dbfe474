"""The dashboard through the controller's real app (``httpx.ASGITransport``), on SQLite and
PostgreSQL: sign-in, the session cookie, the sections, static files."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.dashboard.session import COOKIE_NAME, CSRF_HEADER
from tests.controller.conftest import FakeClock, Harness, make_settings, node_status, start_controller


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.fixture
async def controller(
    crm_engine: AsyncEngine, db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = make_settings(db_url, tokens, secret_key, tmp_path, operator_token="operator-" + "x" * 20)
    async with AsyncExitStack() as stack:
        h = await start_controller(
            stack,
            settings,
            clock=FakeClock(),
            tokens=tokens,
            transport_for=lambda _u: httpx.MockTransport(refused),
        )
        for name, roles in (("crm1", ["database", "replication_engine"]), ("crm2", ["indexer"])):
            assert (await h.register(name, roles=roles, fqdn=f"127.0.0.1:900{name[-1]}")).status_code in (
                200,
                201,
            )
            assert (await h.heartbeat(node_status(name, roles=roles))).status_code == 200
        yield h


def browser(h: Harness) -> httpx.AsyncClient:
    """A client without the bearer token, as a browser is."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url="http://controller.test")


@contextlib.asynccontextmanager
async def signed_in(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(h) as client:
        resp = await client.get("/", params={"token": h.tokens["admin"]})
        assert resp.status_code == 303 and resp.headers["location"] == "/"
        yield client


async def test_signin_with_token_sets_an_httponly_cookie_without_the_token(controller: Harness) -> None:
    async with browser(controller) as client:
        resp = await client.get("/")
        assert resp.status_code == 401 and 'name="token"' in resp.text
        resp = await client.get("/", params={"token": "wrong-token-0123456789"})
        assert resp.status_code == 401 and "not a valid admin, operator or viewer token" in resp.text
        assert COOKIE_NAME not in resp.headers.get("set-cookie", "")

        resp = await client.get("/", params={"token": controller.tokens["admin"]})
        assert resp.status_code == 303
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith(COOKIE_NAME + "=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert controller.tokens["admin"] not in cookie

        page = await client.get("/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
        assert "signed in as <strong>admin</strong>" in page.text
        for name in ("crm1", "crm2"):
            assert f'data-node="{name}"' in page.text
        assert "Replication Engine" in page.text and "Indexer" in page.text
        assert controller.tokens["admin"] not in page.text


async def test_signin_form_and_signout(controller: Harness) -> None:
    async with browser(controller) as client:
        resp = await client.post("/dashboard/signin", data={"token": "operator-" + "x" * 20})
        assert resp.status_code == 303
        assert "signed in as <strong>operator</strong>" in (await client.get("/")).text
        cookie = client.cookies[COOKIE_NAME]
        resp = await client.post("/dashboard/signout")
        assert resp.status_code == 403  # a cross-site form cannot sign a user out
        assert (await client.get("/")).status_code == 200
        resp = await client.post("/dashboard/signout", headers={CSRF_HEADER: "1"})
        assert resp.status_code == 200 and resp.json() == {"signed_out": True}
        assert (await client.get("/")).status_code == 401
        # The session ended on the server: the copied cookie opens nothing any more.
        async with browser(controller) as thief:
            thief.cookies.set(COOKIE_NAME, cookie)
            assert (await thief.get("/")).status_code == 401
            assert (await thief.get("/api/v1/cluster")).status_code == 401


async def test_fragments_need_the_session_and_carry_every_section(controller: Harness) -> None:
    async with browser(controller) as client:
        resp = await client.get("/dashboard/fragments")
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    async with signed_in(controller) as client:
        sections = (await client.get("/dashboard/fragments")).json()["sections"]
        assert set(sections) == {"warnings", "servers", "distribution", "upgrade", "audit", "maintenance"}
        assert "Not read yet" in sections["maintenance"]
        assert 'data-node="crm2"' in sections["servers"] and 'data-state="up"' in sections["servers"]
        assert '<svg class="chart"' in sections["distribution"]
        assert "nodes.register" in sections["audit"]


async def test_drain_through_the_api_shows_on_the_next_fragments(controller: Harness) -> None:
    async with signed_in(controller) as client:  # signed in first: the drain ends once crm2 is empty
        resp = await controller.client.post("/api/v1/nodes/crm2/drain")
        assert resp.status_code == 202
        servers = (await client.get("/dashboard/fragments")).json()["sections"]["servers"]
        assert 'data-node="crm2" data-state="draining"' in servers
        assert "/api/v1/nodes/crm2/undrain" in servers


async def test_the_cookie_counts_for_operator_actions_only_with_the_dashboard_header(
    controller: Harness,
) -> None:
    async with signed_in(controller) as client:
        resp = await client.post("/api/v1/nodes/crm2/drain")
        assert resp.status_code == 401  # a cross-site form cannot add the header
        resp = await client.post("/api/v1/nodes/crm2/drain", headers={CSRF_HEADER: "1"})
        assert resp.status_code == 202, resp.text
        resp = await client.post("/api/v1/nodes/crm2/undrain", headers={CSRF_HEADER: "1"})
        assert resp.status_code == 200 and resp.json()["state"] == "up"


async def test_static_files_are_served_and_nothing_else(controller: Harness) -> None:
    async with browser(controller) as client:
        js = await client.get("/static/dashboard/dashboard.js")
        assert js.status_code == 200 and "EventSource" in js.text
        css = await client.get("/static/dashboard/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        other = await client.get("/static/dashboard/..%2Fdashboard.py")
        assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


async def test_sessions_expire_and_die_with_a_rotated_token(
    controller: Harness, tmp_path: Path, secret_key: str, tokens: dict[str, str]
) -> None:
    from controller.access.principal import Principal, Role
    from controller.dashboard.session import DashboardSessions

    ctx = controller.ctx
    sessions = ctx.dashboard_sessions
    value = await sessions.open(Principal(name="admin", role=Role.ADMIN))
    assert (await sessions.read(value)) == Principal(name="admin", role=Role.ADMIN, kind="session")
    assert await sessions.read(value[:-4] + "AAAA") is None
    rotated = make_settings(
        ctx.settings.state_url, tokens | {"admin": "admin-rotated-0123456789"}, secret_key, tmp_path
    )
    assert await DashboardSessions(ctx.state_engine, rotated, clock=ctx.clock).read(value) is None
    controller.clock.advance(13 * 3600)
    assert await sessions.read(value) is None
