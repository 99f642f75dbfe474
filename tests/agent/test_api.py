"""The agent's HTTP contract: auth, bad input, unknown operations, idempotent op ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from node_agent.testing import SandboxAgent, running_sandbox_agent


@pytest.fixture
async def agent(tmp_path: Path, sqlite_url: str, tokens: dict[str, str]) -> AsyncIterator[SandboxAgent]:
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path / "crm1",
        crm_db_url=sqlite_url,
        token=tokens["agent"],
        roles=["database"],
    ) as a:
        yield a


def _error(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic abc"}],
)
async def test_every_v1_route_needs_the_token(agent: SandboxAgent, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(transport=agent.transport, base_url="http://agent") as anon:
        for method, path in [
            ("GET", "/v1/status"),
            ("POST", "/v1/operations"),
            ("GET", "/v1/operations/x"),
            ("POST", "/v1/operations/x/cancel"),
        ]:
            r = await anon.request(method, path, headers=headers, json={"op_id": "a", "action": "stop_web"})
            err = _error(r, 401)
            assert err["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert (await anon.get("/healthz")).status_code == 200
    # Nothing ran.
    assert agent.operations.records() == []


async def test_status_reports_the_installed_node(agent: SandboxAgent) -> None:
    r = await agent.client.get("/v1/status")
    assert r.status_code == 200
    s = r.json()
    assert s["name"] == "crm1" and s["install_name"] == "CRM" and s["version"] == "7.3"
    assert s["roles"] == ["database"]
    assert s["web"] == "running" and s["tomcat"] == "running"
    assert s["replication_engine"] is False
    assert s["services"]["indexer"] == "not_installed"
    assert s["web_url"] == agent.web_url and s["driver"] == "sandbox"
    assert s["free_disk_bytes"] > 0 and s["last_iis_start"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"op_id": "a1", "action": "format_c_drive"}, "unknown action"),
        ({"op_id": "a2", "action": "stop_web", "params": {"force": True}}, "force"),
        ({"op_id": "a3", "action": "start_service", "params": {"service": "explorer"}}, "service"),
        ({"op_id": "a4", "action": "backup_registry", "params": {"destination": "../../etc"}}, "destination"),
        ({"op_id": "a5", "action": "backup_registry", "params": {"destination": "/etc/x"}}, "destination"),
        ({"op_id": "a6", "action": "restore_database", "params": {"source": "C:\\Windows"}}, "source"),
        ({"op_id": "a7", "action": "restore_database", "params": {"source": "\\\\evil\\share"}}, "source"),
        ({"op_id": "a8", "action": "probe_library", "params": {"path": "\\\\?\\C:\\x"}}, "path"),
        ({"op_id": "a9", "action": "probe_library", "params": {"path": "\\\\srv\\share\\..\\x"}}, "path"),
        ({"op_id": "b1", "action": "run_installer", "params": {"mode": "upgrade"}}, "version"),
        ({"op_id": "b2", "action": "check_license", "params": {}}, "license_key"),
        ({"op_id": "b3", "action": "fingerprint_records", "params": {"ids": [-1]}}, "ids"),
        ({"op_id": "b4", "action": "register_dll", "params": {"path": "a/../../b"}}, "path"),
        ({"op_id": "bad op id!", "action": "stop_web"}, "op_id"),
        ({"action": "stop_web"}, "op_id"),
        ({"op_id": "b5", "action": "stop_web", "extra": 1}, "extra"),
    ],
)
async def test_bad_input_is_a_422_json_error_and_runs_nothing(
    agent: SandboxAgent, body: dict[str, object], where: str
) -> None:
    r = await agent.client.post("/v1/operations", json=body)
    err = _error(r, 422)
    assert err["code"] == "invalid"
    assert where in str(err["message"]) + str(err["details"])
    assert agent.operations.records() == []


async def test_not_json_is_a_422(agent: SandboxAgent) -> None:
    r = await agent.client.post(
        "/v1/operations", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(r, 422)


async def test_unknown_operation_is_a_404(agent: SandboxAgent) -> None:
    assert _error(await agent.client.get("/v1/operations/nope"), 404)["code"] == "not_found"
    assert _error(await agent.client.post("/v1/operations/nope/cancel"), 404)["code"] == "not_found"


async def test_same_op_id_twice_is_one_operation(agent: SandboxAgent) -> None:
    body = {"op_id": "run-1:step-7", "action": "backup_program_files", "params": {}}
    first = await agent.client.post("/v1/operations", json=body)
    second = await agent.client.post("/v1/operations", json=body)
    assert first.status_code == second.status_code == 202
    assert first.json()["op_id"] == second.json()["op_id"] == "run-1:step-7"
    await agent.operations.wait("run-1:step-7")
    third = await agent.client.post("/v1/operations", json=body)
    assert third.json()["state"] == "succeeded"
    backups = list((agent.driver.backup_root / "program_files").iterdir())
    assert [p.name for p in backups if p.is_dir()] == ["run-1-step-7"]
    assert len(agent.operations.records()) == 1


async def test_same_op_id_with_another_action_is_a_conflict(agent: SandboxAgent) -> None:
    assert (
        await agent.client.post("/v1/operations", json={"op_id": "x1", "action": "stop_web"})
    ).status_code == 202
    r = await agent.client.post("/v1/operations", json={"op_id": "x1", "action": "start_web"})
    assert _error(r, 409)["code"] == "conflict"


async def test_the_record_never_echoes_secrets(agent: SandboxAgent) -> None:
    rec = await agent.run("lic-1", "check_license", {"license_key": "SECRET-LICENSE-KEY-77"})
    assert rec.state == "succeeded"
    assert rec.params == {"license_key": "***"}
    raw = (await agent.client.get("/v1/operations/lic-1")).text
    assert "SECRET-LICENSE-KEY-77" not in raw


async def test_the_agent_works_while_the_crm_database_is_away(tmp_path: Path, tokens: dict[str, str]) -> None:
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path / "crm1",
        crm_db_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        token=tokens["agent"],
        roles=["database"],
    ) as agent:
        status = (await agent.client.get("/v1/status")).json()
        assert status["version"] == "7.3" and status["logged_on"] is None
        rec = await agent.run("s1", "database_sessions")
        assert rec.state == "failed" and rec.error
        assert (await agent.run("w1", "stop_web")).state == "succeeded"
        async with httpx.AsyncClient() as c:
            r = await c.post(agent.web_url + "/crm/eware.dll/Logon", data={"EWARE_USERID": "x"})
            assert r.status_code == 503
