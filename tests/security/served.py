"""An ASGI app served by uvicorn on 127.0.0.1 in a thread of its own (its own event loop), on a
free port or a given one, over plain HTTP or TLS: real sockets for the fuzzing and TLS tests."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn


class Served:
    def __init__(self, app: Any, *, port: int = 0, cert: Path | None = None, key: Path | None = None) -> None:
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)} if cert and key else {}
        self.scheme = "https" if tls else "http"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **tls)  # type: ignore[arg-type]
        )
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.port = port

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
