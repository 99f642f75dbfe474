"""Switching the cluster to HTTPS (``PUT /api/v1/https``) on sandbox servers: addresses refused,
every server's binding checked, HTTPPort/OutlookPort/crmcluster_UseHTTPS written, and one running
balancer's redirects following without a restart; the windows driver's binding check."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from balancer.app import create_app as balancer_app
from config.crm_schema import crm_tables
from config.settings import BalancerSettings
from tests.agent.test_windows_driver import Agent, settings
from tests.upgrade.sandbox import SandboxHarness, sandbox_cluster

NAMES = ["crm1.example.test", "crm2.example.test", "crm3.example.test"]


@contextlib.asynccontextmanager
async def running_balancer(h: SandboxHarness) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """One balancer for the whole test (never restarted); health checks answered 200."""
    app = balancer_app(
        BalancerSettings(_env_file=None, crm_db_url=h.crm_db_url, state_db_url=h.state_db_url),
        health_transport=httpx.MockTransport(lambda r: httpx.Response(200, text="<form>logon</form>")),
        background=False,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://balancer") as client,
    ):
        yield app.state.balancer, client


async def _logon_location(ctx: Any, client: httpx.AsyncClient) -> str:
    await ctx.refresher.refresh_config()
    await ctx.refresher.refresh_states()
    await ctx.refresher.refresh_counts()
    await ctx.refresher.check_health()
    r = await client.post("/crm/eware.dll/Logon", data={"User_Logon": "u"})
    assert r.status_code == 307, r.text
    return str(r.headers["location"])


async def _rows(h: SandboxHarness) -> dict[str, str]:
    t = crm_tables()
    async with h.app.state.ctx.crm_engine.connect() as conn:
        rows = await conn.execute(select(t.parm("parm_name"), t.parm("parm_value")))
        return {str(n): str(v) for n, v in rows}


async def test_the_https_switch_with_the_balancer_following(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    bindings = {"crm1": {"sandbox_https_port": 443}, "crm2": {"sandbox_https_port": 443}}
    async with (
        sandbox_cluster(
            db_url=db_url,
            crm_db_url=crm_db_url,
            tokens=tokens,
            secret_key=secret_key,
            tmp_path=tmp_path,
            agent_settings=bindings,
        ) as h,
        running_balancer(h) as (balancer, users),
    ):
        assert (await _logon_location(balancer, users)).startswith("http://127.0.0.1:")

        # The sandbox's FQ names are addresses: a certificate cannot name them.
        r = await h.client.put("/api/v1/https", json={"enabled": True})
        assert r.status_code == 422, r.text
        assert "IP addresses" in r.json()["error"]["message"]
        assert r.json()["error"]["details"]["addresses"][0].startswith("127.0.0.1:")

        r = await h.client.put("/api/v1/cluster/config", json={"fq_server_names": NAMES})
        assert r.status_code == 200, r.text
        # crm3's CRM website has no https binding yet: refused, nothing written.
        r = await h.client.put("/api/v1/https", json={"enabled": True})
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert "crm3: no https binding on port 443" in err["message"]
        assert err["details"]["servers"]["crm1"]["ok"] is True
        assert "crmcluster_UseHTTPS" not in await _rows(h)
        location = await _logon_location(balancer, users)
        assert location.startswith("http://crm") and ".example.test/crm/" in location

        h.agents["crm3"].app.state.driver.update_state(https_ports=[443])
        r = await h.client.put("/api/v1/https", json={"enabled": True})
        assert r.status_code == 200, r.text
        assert r.json()["enabled"] is True and r.json()["http_port"] == 443
        rows = await _rows(h)
        assert rows["HTTPPort"] == "443" and rows["OutlookPort"] == "443"
        assert rows["crmcluster_UseHTTPS"] == "Y"
        # The same balancer, no restart: its next configuration read sends users over HTTPS.
        location = await _logon_location(balancer, users)
        assert location.startswith("https://crm") and ".example.test/crm/eware.dll/Logon" in location
        assert (await h.client.get("/api/v1/https")).json()["addresses"][
            "crm1"
        ] == "https://crm1.example.test"

        r = await h.client.put("/api/v1/https", json={"enabled": False})
        assert r.status_code == 200 and r.json()["http_port"] == 80
        assert (await _rows(h))["crmcluster_UseHTTPS"] == "N"
        assert (await _logon_location(balancer, users)).startswith("http://crm")
        trail = (await h.client.get("/api/v1/audit")).json()["entries"]
        assert [e["action"] for e in trail if e["action"] == "https.set"] == ["https.set"] * 4


async def test_the_windows_driver_checks_the_binding(tmp_path: Path, tokens: dict[str, str]) -> None:
    from node_agent.app import create_app

    app = create_app(settings(tmp_path, tokens["agent"]), background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://crm1.agent",
            headers={"Authorization": f"Bearer {tokens['agent']}"},
        ) as client:
            agent = Agent(client, app.state.driver, app)
            res = await agent.ok("h1", "check_https_binding", {"port": 443, "host": "crm1.example.test"})
            assert res["bound"] is False and res["bindings"] == ["http/*:80:"]
            assert res["commands"] == [
                r'C:\Windows\System32\inetsrv\appcmd.exe list site "Default Web Site" /text:bindings'
            ]
            agent.model.bindings.append("https/*:443:")
            res = await agent.ok("h2", "check_https_binding", {"port": 443})
            assert res["bound"] is True and res["certificate"] is None and res["answered"] is False
            assert r"C:\Windows\System32\netsh.exe http show sslcert ipport=0.0.0.0:443" in res["commands"]
            agent.model.sslcerts[443] = "3A1F9C0D5E7B2A4C6E8F0A1B3C5D7E9F1A2B3C4D"
            res = await agent.ok("h3", "check_https_binding", {"port": 443})
            assert res["answered"] is True and res["certificate"].startswith("3A1F")
            # A params check as strict as the wire's: no port, no call.
            r = await client.post(
                "/v1/operations", json={"op_id": "h4", "action": "check_https_binding", "params": {}}
            )
            assert r.status_code == 422


def test_crmcluster_https_commands() -> None:
    from tests.cli.fake_controller import FakeController, invoke

    answer = {
        "enabled": True,
        "use_https": True,
        "http_port": 443,
        "outlook_port": 443,
        "addresses": {"crm1": "https://crm1.example.test"},
        "checks": {"crm1": {"ok": True, "message": "https binding on port 443, certificate 3A1F"}},
    }
    fake = FakeController({("PUT", "/api/v1/https"): answer, ("GET", "/api/v1/https"): answer})
    result = invoke(fake, "https", "enable", "--port", "443")
    assert result.exit_code == 0, result.stderr
    assert "https://crm1.example.test" in result.stdout and "certificate 3A1F" in result.stdout
    assert fake.requests[-1].content == b'{"enabled":true,"port":443,"outlook_port":null}'
    assert invoke(fake, "https", "show", "--json").stdout.count('"http_port": 443') == 1
