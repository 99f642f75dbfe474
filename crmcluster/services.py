"""Running a service: uvicorn with our logging (secrets redacted) and a clear word when a port is taken."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys

import uvicorn
from fastapi import FastAPI

from config.secrets import install_redaction

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


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_redaction()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        install_redaction(logging.getLogger(name))


def serve(app: FastAPI, *, host: str, port: int, access_log: bool = False, log_level: str = "info") -> None:
    """Serve ``app`` until SIGINT/SIGTERM (uvicorn's graceful shutdown: stop accepting, drain, stop)."""
    check_port_free(host, port)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level=log_level if log_level != "info" else "warning",
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    asyncio.run(server.serve())
    if not server.started:
        raise SystemExit(1)
