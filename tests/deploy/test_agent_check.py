"""HAProxy's agent-check against sandbox agents: deploy/haproxy/agent-check.cfg run by a real
HAProxy on loopback, in front of the sandbox web servers, asking each agent's agent-check port.

A drain through the controller shows as DRAIN in HAProxy's ``show stat`` within 5 s, an undrain
as UP (ramping up its weight), a drain that finds no users as MAINT, and a stopped web server as
DOWN — with no change to HAProxy's configuration."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config.state_schema import utcnow
from node_agent.testing import SandboxAgent, running_sandbox_agent
from tests.controller.conftest import BASE, Harness, make_settings, refused, start_controller
from tests.deploy.haproxy import RunningHAProxy, for_loopback, running_haproxy
from tests.deploy.tools import DEPLOY, tool

pytestmark = pytest.mark.slow

ROLES = {
    "crm1": ["database", "replication_engine", "email_manager"],
    "crm2": ["indexer"],
    "crm3": ["escalation"],
}
BACKEND = "sage_crm_web"
WITHIN = 5.0  # seconds: the bound for HAProxy to follow the controller


@dataclass
class Site:
    controller: Harness
    agents: dict[str, SandboxAgent]
    haproxy: RunningHAProxy

    async def logon(self, node: str, user: str) -> None:
        async with httpx.AsyncClient(base_url=self.agents[node].web_url) as web:
            r = await web.post("/crm/eware.dll/Logon", data={"EWARE_USERID": user})
            assert r.status_code == 200, r.text


@pytest.fixture
async def site(
    tmp_path: Path, sqlite_url: str, tokens: dict[str, str], secret_key: str
) -> AsyncIterator[Site]:
    haproxy = tool("haproxy", "haproxy")
    settings = make_settings(
        sqlite_url, tokens, secret_key, tmp_path, heartbeat_timeout=15, sweep_interval=0.2
    )
    transports: dict[str, httpx.AsyncBaseTransport] = {}
    refuse = httpx.MockTransport(refused)
    (tmp_path / "library").mkdir()
    short = Path(tempfile.mkdtemp(prefix="hx"))  # a unix socket path must stay short
    async with AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, short, ignore_errors=True)
        h = await start_controller(
            stack,
            settings,
            clock=utcnow,  # type: ignore[arg-type]  # real time here: the test never moves the clock
            tokens=tokens,
            transport_for=lambda url: transports.get(url.rstrip("/"), refuse),
        )
        agents: dict[str, SandboxAgent] = {}
        for name, roles in ROLES.items():
            agents[name] = await stack.enter_async_context(
                running_sandbox_agent(
                    name=name,
                    data_dir=tmp_path / name,
                    crm_db_url=sqlite_url,
                    token=await h.node_token(name),
                    roles=roles,
                    library_root=tmp_path / "library",
                    background=True,
                    app_kwargs={"controller_transport": httpx.ASGITransport(app=h.app)},
                    controller_url=BASE,
                    agent_url=f"http://{name}.agent",
                    agent_check_port=0,
                    agent_check_host="127.0.0.1",
                    heartbeat_interval=2,
                    state_poll_interval=0.5,
                )
            )
            transports[f"http://{name}.agent"] = agents[name].transport
        fqdn = {n: a.web_url.split("://", 1)[1].rstrip("/") for n, a in agents.items()}
        r = await h.client.put(
            "/api/v1/cluster/config",
            json={
                "server_names": list(ROLES),
                "fq_server_names": list(fqdn.values()),
                "dtls_server_name": "crm1",
            },
        )
        assert r.status_code == 200, r.text
        for name, roles in ROLES.items():
            r = await h.client.post(
                "/api/v1/nodes", json={"name": name, "agent_url": f"http://{name}.agent", "roles": roles}
            )
            assert r.status_code == 201, r.text
        config = for_loopback(
            (DEPLOY / "haproxy" / "agent-check.cfg").read_text(),
            socket_path=short / "admin.sock",
            servers={
                n: f"{fqdn[n]} check cookie {n} agent-port {agents[n].app.state.agent_check.port}"
                for n in ROLES
            },
        )
        running = stack.enter_context(running_haproxy(haproxy, config, short))
        s = Site(controller=h, agents=agents, haproxy=running)
        for name in ROLES:
            await running.wait_for(BACKEND, name, "UP", agent="via agent : up", timeout=15)
        yield s


async def node_state(site: Site, name: str) -> str:
    nodes = (await site.controller.client.get("/api/v1/cluster")).json()["nodes"]
    return str(next(n["state"] for n in nodes if n["name"] == name))


async def test_haproxy_follows_drain_undrain_and_a_stopped_web_server(site: Site) -> None:
    hx = site.haproxy
    before = await hx.servers(BACKEND)
    assert all(s.weight == 100 for s in before.values()), before  # `up ready 100%` of weight 100
    assert before["crm2"].last_agent.startswith("via agent : up"), before["crm2"]

    # A user is on crm2, so the drain waits for them: the node stays `draining`.
    await site.logon("crm2", "alice")
    r = await site.controller.client.post("/api/v1/nodes/crm2/drain", json={})
    assert r.status_code in (200, 202), r.text
    assert await node_state(site, "crm2") == "draining"
    took, stat = await hx.wait_for(BACKEND, "crm2", "DRAIN", timeout=WITHIN)
    print(f"drain -> HAProxy DRAIN in {took:.2f}s")
    others = await hx.servers(BACKEND)
    assert others["crm1"].status == others["crm3"].status == "UP"

    r = await site.controller.client.post("/api/v1/nodes/crm2/undrain")
    assert r.status_code == 200, r.text
    took, stat = await hx.wait_for(BACKEND, "crm2", "UP", timeout=WITHIN)
    print(f"undrain -> HAProxy UP in {took:.2f}s, weight {stat.weight}")
    # Back in rotation, it ramps up (CRMCLUSTER_AGENT_CHECK_SLOW_START, 30 s) instead of taking
    # every new session at once.
    assert 1 <= stat.weight < 100, stat

    # Stop its IIS: the agent sees it itself and says so before HAProxy's own checks would (3 x 2 s).
    record = await site.agents["crm2"].run("test-stop-web", "stop_web")
    assert record.state == "succeeded", record
    took, stat = await hx.wait_for(BACKEND, "crm2", "DOWN", timeout=WITHIN)
    print(f"stop_web -> HAProxy DOWN in {took:.2f}s ({stat.last_agent})")
    assert "via agent : down" in stat.last_agent, stat

    record = await site.agents["crm2"].run("test-start-web", "start_web")
    assert record.state == "succeeded", record
    await hx.wait_for(BACKEND, "crm2", "UP", timeout=10)


async def test_a_drain_with_no_users_left_is_maintenance_and_maint(site: Site) -> None:
    r = await site.controller.client.post("/api/v1/nodes/crm3/drain", json={})
    assert r.status_code in (200, 202), r.text
    for _ in range(100):
        if await node_state(site, "crm3") == "maintenance":
            break
        await asyncio.sleep(0.05)
    assert await node_state(site, "crm3") == "maintenance"
    took, _ = await site.haproxy.wait_for(BACKEND, "crm3", "MAINT", timeout=WITHIN)
    print(f"maintenance -> HAProxy MAINT in {took:.2f}s")
    r = await site.controller.client.post("/api/v1/nodes/crm3/undrain")
    assert r.status_code == 200, r.text
    await site.haproxy.wait_for(BACKEND, "crm3", "UP", timeout=WITHIN)
