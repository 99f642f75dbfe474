"""The one variant that is not a setting: the logon served by a FastAPI route, not the raw path.

    python -m bench.balancer.serve PORT      (settings from the environment, as ``crmcluster balancer``)

Run through :func:`crmcluster.services.serve`, the same runner as ``crmcluster balancer``, so the
only difference measured is the route.
"""

from __future__ import annotations

import sys

from fastapi import Request, Response


def main(argv: list[str]) -> None:
    from balancer.app import create_app
    from config.settings import BalancerSettings, load_settings
    from crmcluster.services import serve

    app = create_app(load_settings(BalancerSettings))
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
            headers={"location": location, "x-crm-server": decision.slot.name, "cache-control": "no-store"},
        )

    serve(app, host="127.0.0.1", port=int(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
