"""One server process of the benchmark, always under the same uvicorn settings.

python -m bench.balancer.serve bare|balancer|per_logon PORT [DB_URL]
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import Request, Response

LOCATION = b"http://crm1.example.com/crm/eware.dll/Logon"


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: a raw ASGI app that only answers a fixed 307 (and handles the lifespan)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 307,
            "headers": [
                (b"location", LOCATION),
                (b"x-crm-server", b"crm1"),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def run(app: Any, port: int) -> None:
    """The uvicorn settings both apps share: one worker, uvloop + httptools, no access log."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        workers=1,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "bare":
        run(bare_app, port)
        return
    from balancer.app import create_app
    from config.settings import BalancerSettings

    url = argv[2]
    settings = BalancerSettings(
        crm_db_url=url,
        state_db_url=url,
        install_name="CRM",
        counts_mode="per_logon" if kind == "per_logon" else "background",
    )
    app = create_app(settings)
    if kind == "fastapi":
        ctx = app.state.balancer
        app.logon_route = None

        @app.api_route("/crm/eware.dll/Logon", methods=["GET", "POST"])
        async def logon(request: Request) -> Response:
            decision = ctx.pool.decide(None, now=ctx.clock())
            if decision is None:
                return Response(status_code=503)
            location = decision.slot.location.decode()
            if request.url.query:
                location += "?" + request.url.query
            return Response(
                status_code=307,
                headers={
                    "location": location,
                    "x-crm-server": decision.slot.name,
                    "cache-control": "no-store",
                },
            )

    run(app, port)


if __name__ == "__main__":
    main(sys.argv[1:])
