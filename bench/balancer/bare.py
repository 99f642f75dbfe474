"""The baseline: a bare ASGI app that only answers a fixed 307, started the ordinary way.

    uvicorn bench.balancer.bare:app --host 127.0.0.1 --port PORT --no-access-log --log-level warning

(uvicorn's own command line, its defaults: ``--loop auto`` = uvloop, ``--http auto`` = httptools.)
"""

from __future__ import annotations

from typing import Any

LOCATION = b"http://crm1.example.com/crm/eware.dll/Logon"
HEADERS = [
    (b"location", LOCATION),
    (b"x-crm-server", b"crm1"),
    (b"cache-control", b"no-store"),
    (b"content-length", b"0"),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 307, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b""})
