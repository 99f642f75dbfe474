"""A cluster watched the way a site watches it: a clean upgrade of three sandbox servers and a few
logons through a balancer, with every log line captured as JSON and every service's ``/metrics``
scraped at the end."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from balancer.app import create_app as balancer_app
from config import logs
from config.settings import BalancerSettings
from config.state_schema import utcnow
from node_agent.protocol import Heartbeat
from tests.upgrade.conftest import DB_PASSWORD
from tests.upgrade.sandbox import sandbox_cluster

DATABASE = {"server": "sql01", "port": 1433, "user": "crmsql", "password": DB_PASSWORD}
REQUEST_ID = "req-metadata-refresh-1"


@dataclass
class Observed:
    run: dict[str, Any]
    metrics: dict[str, str]  # service -> /metrics text
    lines: list[dict[str, Any]] = field(default_factory=list)  # every log line, parsed
    tokens: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def json_log_capture() -> AsyncIterator[io.StringIO]:
    """Every record of the process, rendered by crmcluster's JSON formatter into a buffer."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs.formatter(json=True, static={"service": "test"}))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def observe(tmp_path: Path, tokens: dict[str, str], secret_key: str) -> Observed:
    state_url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    crm_url = f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}"
    async with json_log_capture() as buf:
        async with sandbox_cluster(
            db_url=state_url, crm_db_url=crm_url, tokens=tokens, secret_key=secret_key, tmp_path=tmp_path
        ) as h:
            for name, agent in h.agents.items():  # one heartbeat each (these agents run no loops)
                beat = Heartbeat(
                    status=await agent.driver.status(), agent_url=f"http://{name}.agent", sent_at=utcnow()
                )
                hb = await h.client.post(
                    f"/api/v1/agents/{name}/heartbeat",
                    content=beat.model_dump_json(),
                    headers={
                        "Authorization": f"Bearer {agent.token}",
                        "Content-Type": "application/json",
                    },
                )
                assert hb.status_code == 200, hb.text
            r = await h.client.post("/api/v1/metadata/refresh", headers={"X-Request-ID": REQUEST_ID})
            assert r.status_code == 200, r.text
            assert r.headers["x-request-id"] == REQUEST_ID
            run = await h.plan(database=DATABASE, batch_size=2)
            await h.command(run["id"], "start")
            done = await h.wait(run["id"], "succeeded", "failed", "restored", timeout=120)
            assert done["status"] == "succeeded", done["message"]

            assert await h.logon("crm2", "ann") == 200  # an open session: her next logon is sticky
            # Prometheus' viewer token, made on the controller, read by the balancer from the state db.
            made = await h.client.post("/api/v1/tokens", json={"name": "prometheus", "role": "viewer"})
            assert made.status_code == 201, made.text
            viewer = made.json()["token"]
            settings = BalancerSettings(_env_file=None, crm_db_url=crm_url, state_db_url=state_url)
            app = balancer_app(settings)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://balancer") as b,
            ):
                for user in ("bob", "cy", "ann"):
                    routed = await b.post("/crm/eware.dll/Logon", data={"EWARE_USERID": user})
                    assert routed.status_code == 307, routed.text
                # The health loop's first pass (real requests to the stand-in web servers).
                deadline = asyncio.get_running_loop().time() + 10
                while "crmcluster_balancer_health_checks_total{" not in (
                    text := (await b.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})).text
                ):
                    assert asyncio.get_running_loop().time() < deadline, "no health check in 10 s"
                    await asyncio.sleep(0.05)
                metrics = {"balancer": text}
            metrics["controller"] = (
                await h.client.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
            ).text
            for name, agent in h.agents.items():
                metrics[f"agent {name}"] = (await agent.client.get("/metrics")).text
            node_tokens = {name: agent.token for name, agent in h.agents.items()} | {"viewer": viewer}
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    return Observed(run=done, metrics=metrics, lines=lines, tokens=node_tokens)
