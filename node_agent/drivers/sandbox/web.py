"""The stand-in CRM web server: IIS with ``eware.dll`` and Tomcat's ``/sdata/``, played by a real
HTTP server on its own port (contract: DESIGN.md "Agent contract", the lead's item 1).

    GET  /{install}/                          the logon page (as the site's default document)
    GET  /{install}/eware.dll/go|Logon        the logon page, as Sage CRM's: a form posting to
                                              ``eware.dll/Logon?SID=<provisional>`` with the fields
                                              ``EWARE_USERID`` and ``PASSWORD`` (the provisional SID
                                              is no logon)
    POST /{install}/eware.dll/Logon           ``EWARE_USERID`` and ``PASSWORD`` (never kept), the
                                              fields of Sage's form and nothing else: logs
                                              the user on — an ``Activity`` row with
                                              ``Acty_ServerName`` = this node, a licence seat taken
                                              until the Log Out link is followed — and answers the
                                              logged-on page with the session id (``SID``)
    GET|POST /{install}/eware.dll/Logoff      ``SID`` or ``User_Logon``: closes the session
    GET  /{install}/eware.dll/Sessions        this server's open sessions (JSON)
    GET  /sdata/...                           Tomcat (SData): 200 while Tomcat runs, else 503; the
                                              version it answers is its web apps' (Tomcat's own
                                              folder), not the website's

While IIS is stopped every ``/{install}/`` route answers 503 (never below 500); while Tomcat is
stopped ``/sdata/`` answers 503. The install name in the URL is lower-cased, as Sage does.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import secrets
import socket
from collections.abc import Generator
from typing import Any, Protocol
from urllib.parse import parse_qs

import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from config.errors import DatabaseUnavailable
from node_agent.drivers.sandbox.crm_database import SandboxCrmDatabase

log = logging.getLogger("crmcluster.agent.web")


class WebHost(Protocol):
    """What the web server asks of the sandbox server it stands in for."""

    node: str
    install_name: str
    session_timeout_minutes: int

    @property
    def web_running(self) -> bool: ...
    @property
    def tomcat_running(self) -> bool: ...
    @property
    def version(self) -> str | None: ...
    @property
    def tomcat_version(self) -> str | None:
        """The version of the web apps Tomcat serves (its own folder's)."""
        ...

    @property
    def crm_db(self) -> SandboxCrmDatabase: ...
    @property
    def crm_application(self) -> bool:
        """False once the install's IIS application (or its folder) is gone: its routes are 404."""
        ...


def _unavailable(what: str) -> Response:
    return PlainTextResponse(
        f"503 Service Unavailable: {what} is stopped", status_code=503, headers={"Retry-After": "5"}
    )


def _no_application() -> Response:
    return PlainTextResponse("404 Not Found: no Sage CRM application here", status_code=404)


def _logon_page(host: WebHost, message: str = "") -> str:
    e = html.escape
    sid = secrets.randbelow(10**15)  # a provisional session id, as Sage's page carries
    return f"""<!DOCTYPE html>
<html><head><title>Sage CRM - {e(host.node)}</title></head><body>
<h1>Sage CRM {e(host.version or "")}</h1>
<p>Server: <span id="server">{e(host.node)}</span></p>
<p>{e(message)}</p>
<form name="EntryForm" method="post"
 action="/{e(host.install_name.lower())}/eware.dll/Logon?SID={sid}&amp;Act=0">
<label>User name <input name="EWARE_USERID"></label>
<label>Password <input type="password" name="PASSWORD"></label>
<input type="hidden" name="HIDDEN_BrowserType" value="Other">
<button type="submit">Log On</button>
</form></body></html>
"""


async def _form(request: Request) -> dict[str, str]:
    values: dict[str, str] = {k: v[-1] for k, v in parse_qs(request.url.query).items()}
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", errors="replace")
        values.update({k: v[-1] for k, v in parse_qs(body).items()})
    return values


def build_web_app(host: WebHost) -> Starlette:
    async def logon(request: Request) -> Response:
        if not host.web_running:
            return _unavailable("IIS")
        if not host.crm_application:
            return _no_application()
        if request.method == "GET":
            return HTMLResponse(_logon_page(host))
        form = await _form(request)
        user = (form.get("EWARE_USERID") or "").strip()
        if not user or len(user) > 100:
            return HTMLResponse(_logon_page(host, "Enter your user name."), status_code=400)
        try:
            sid = await host.crm_db.logon(user)
        except (SQLAlchemyError, DatabaseUnavailable, OSError) as exc:  # the DLL cannot reach the database
            log.warning("logon on %s failed: %s", host.node, type(exc).__name__)
            return PlainTextResponse("503 the CRM database did not answer", status_code=503)
        e = html.escape
        return HTMLResponse(
            f"""<!DOCTYPE html><html><head><title>Sage CRM - {e(host.node)}</title></head><body>
<p>Logged on as <span id="user">{e(user)}</span> to <span id="server">{e(host.node)}</span>.</p>
<p>SID=<span id="sid">{sid}</span></p>
<a href="/{e(host.install_name.lower())}/eware.dll/Do?SID={sid}&amp;Act=520">My CRM</a>
<a href="/{e(host.install_name.lower())}/eware.dll/Logoff?SID={sid}" title="Log Out">Log Out</a>
</body></html>""",
            headers={"X-CRM-Server": host.node, "X-CRM-SID": str(sid)},
        )

    async def logoff(request: Request) -> Response:
        if not host.web_running:
            return _unavailable("IIS")
        if not host.crm_application:
            return _no_application()
        form = await _form(request)
        sid_raw = form.get("SID", "")
        sid = int(sid_raw) if sid_raw.isdigit() else None
        user = form.get("User_Logon") or None
        if sid is None and user is None:
            return PlainTextResponse("SID or User_Logon required", status_code=400)
        try:
            closed = await host.crm_db.logoff(sid=sid, user=user)
        except (SQLAlchemyError, DatabaseUnavailable, OSError) as exc:
            log.warning("logoff on %s failed: %s", host.node, type(exc).__name__)
            return PlainTextResponse("503 the CRM database did not answer", status_code=503)
        return JSONResponse({"closed": closed, "server": host.node})

    async def sessions(_: Request) -> Response:
        if not host.web_running:
            return _unavailable("IIS")
        if not host.crm_application:
            return _no_application()
        rows = await host.crm_db.open_sessions(host.session_timeout_minutes)
        users = await host.crm_db.logged_on(host.session_timeout_minutes)
        return JSONResponse({"server": host.node, "sessions": rows, "logged_on": users})

    async def root(request: Request) -> Response:
        if not host.web_running:
            return _unavailable("IIS")
        if not host.crm_application:
            return _no_application()
        return HTMLResponse(_logon_page(host))

    async def sdata(request: Request) -> Response:
        if not host.tomcat_running:
            return _unavailable("Tomcat")
        return JSONResponse(
            {"sdata": True, "server": host.node, "install": host.install_name, "version": host.tomcat_version}
        )

    async def not_found(request: Request) -> Response:
        return PlainTextResponse("404 Not Found", status_code=404)

    inst = host.install_name.lower()
    routes = [
        Route(f"/{inst}", root, methods=["GET"]),
        Route(f"/{inst}/", root, methods=["GET"]),
        Route(f"/{inst}/eware.dll/Logon", logon, methods=["GET", "POST"]),
        Route(f"/{inst}/eware.dll/go", logon, methods=["GET"]),
        Route(f"/{inst}/eware.dll/Logoff", logoff, methods=["GET", "POST"]),
        Route(f"/{inst}/eware.dll/Sessions", sessions, methods=["GET"]),
        Route("/sdata", sdata, methods=["GET"]),
        Route("/sdata/{rest:path}", sdata, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: lambda r, e: not_found(r)})


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process's own (the agent's) server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class StandInWebServer:
    """Runs :func:`build_web_app` on ``host:port`` (port 0: a free one) inside the agent's loop."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, *, fallback_to_free_port: bool = False) -> None:
        """Listen on the port (with ``fallback_to_free_port``, any free one when it is taken)."""
        try:
            sock = _bind(self.host, self.port)
        except OSError:
            if not fallback_to_free_port or self.port == 0:
                raise OSError(f"port {self.port} on {self.host} is already in use") from None
            sock = _bind(self.host, 0)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
        )
        server = _QuietServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="stand-in-web")
        while not server.started:
            if self._task.done():
                raise OSError(f"the stand-in CRM web server could not start on {self.host}:{self.port}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, 5)
        self._server = None
        self._task = None
