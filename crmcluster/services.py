"""Running a service: uvicorn as its own runner starts it, with our logging and a tamed collector.

:func:`serve` is what ``crmcluster controller|balancer|agent`` call. It runs uvicorn through
``Server.run()``, which builds the event loop from ``loop="auto"`` — uvloop when installed (it
comes with ``uvicorn[standard]``) — and parses HTTP with ``http="auto"`` (httptools when
installed). ``asyncio.run(server.serve())`` would skip the loop choice and run on the stock
asyncio loop: the balancer then did 0.58 of a bare uvicorn app's logons/s instead of 0.85+.
Once the app's lifespan has started, the collector is tamed (:mod:`crmcluster.collector`).
Logs are one line per event (:mod:`config.logs`), secrets redacted; a port already taken is one clear line.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from config import logs
from config.settings import CommonSettings
from config.tls import check_listen, server_ssl
from crmcluster.collector import tame_after_startup

log = logging.getLogger("crmcluster")


class PortInUse(Exception):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"port {port} on {host} is already in use; pick another with --port (or --ports auto)"
        )
        self.host, self.port = host, port


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`PortInUse` when ``host:port`` cannot be bound."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(host, port) from None
            raise


def setup_logging(settings: CommonSettings, *, service: str, node: str | None = None) -> None:
    """One line per event on stderr: JSON unless it is a terminal (``CRMCLUSTER_LOG_FORMAT``)."""
    logs.configure(
        level=settings.log_level,
        fmt=settings.log_format,
        service=service,
        static={"node": node} if node else None,
        stream=sys.stderr,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, with the collector tamed between the app's start-up and the first request.

    uvicorn runs the lifespan start-up, then binds and serves: the collection and freeze are
    slipped in between (a full collection of what start-up built takes 0.1-0.3 s, which would
    otherwise stall the first requests).
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        lifespan = self.lifespan
        app_startup = lifespan.startup

        async def startup_then_tame() -> None:
            await app_startup()
            if not lifespan.should_exit:
                tame_after_startup()

        lifespan.startup = startup_then_tame
        await super().startup(sockets)


def serve(
    app: FastAPI,
    *,
    host: str,
    port: int,
    access_log: bool = False,
    log_level: str = "info",
    settings: Any = None,
    service: str = "service",
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (uvicorn's graceful shutdown: stop accepting, drain, stop).
    With ``settings``: HTTPS given its certificate and key; plain HTTP off loopback only if allowed."""
    tls: dict[str, str] = {}
    if settings is not None:
        check_listen(settings, host, service=service)
        tls = server_ssl(settings)
    check_port_free(host, port)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http="auto",
        access_log=access_log,
        log_level=log_level if log_level != "info" else "warning",
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **tls,  # type: ignore[arg-type]
    )
    server = _Server(config)
    server.run()
    if not server.started:
        raise SystemExit(1)
