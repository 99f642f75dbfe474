"""Hostile input is a 422 with the JSON error, never a 500 and never quietly taken: integers past
what the database holds, URLs httpx cannot parse or that point at metadata services, loose
booleans, duplicate keys, NaN, deep nesting, and Windows paths that alias something else."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from node_agent.testing import SandboxAgent
from tests.controller.conftest import Harness


def assert_invalid(resp: httpx.Response, *words: str) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid"
    for word in words:
        assert word in error["message"], error["message"]
    return dict(error)


async def test_audit_before_id_past_a_database_integer_is_a_422(controller: Harness) -> None:
    for value in ("9223372036854775808", "2147483648", "-1", "0"):
        assert_invalid(await controller.client.get(f"/api/v1/audit?before_id={value}"))
    ok = await controller.client.get("/api/v1/audit?before_id=2147483647")
    assert ok.status_code == 200 and ok.json() == {"entries": []}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:1;id", "port"),
        ("http://[::1", "IPv6"),
        ("http://a:b:c", "port"),
        ("http://169.254.169.254/latest", "metadata"),
        ("http://[::ffff:169.254.169.254]:8701", "metadata"),
        ("http://169.254.10.20:8701", "link-local"),
        ("http://[fe80::1]:8701", "link-local"),
        ("http://metadata.google.internal", "metadata"),
        ("http://0.0.0.0:8701", "one server"),
        ("http://127.1:8701", "IPv4"),
        ("ftp://crm4.example.com", "scheme"),
        ("http://admin:pw@crm4.example.com", "user name"),
        ("http://crm4.example.com:8701/?x=1", "query"),
        ("http://crm4.example.com:99999", "port"),
        ("http://crm4.exa mple.com", "white space"),
        ("http://crm4.exämple.com", "ASCII"),
    ],
)
async def test_registration_refuses_urls_it_must_not_call(controller: Harness, url: str, why: str) -> None:
    resp = await controller.client.post("/api/v1/nodes", json={"name": "crm4", "agent_url": url})
    assert_invalid(resp, why)
    assert (await controller.client.get("/api/v1/nodes")).json()["nodes"] == []


async def test_link_local_agents_only_when_the_setting_allows(
    controller: Harness, tmp_path: Any, db_url: str, tokens: dict[str, str], secret_key: str
) -> None:
    from contextlib import AsyncExitStack

    from tests.controller.conftest import FakeClock, make_settings, refused, start_controller

    settings = make_settings(db_url, tokens, secret_key, tmp_path, allow_link_local_agents=True)
    async with AsyncExitStack() as stack:
        h = await start_controller(
            stack,
            settings,
            clock=FakeClock(),
            tokens=tokens,
            transport_for=lambda _u: httpx.MockTransport(refused),
        )
        resp = await h.client.post(
            "/api/v1/nodes", json={"name": "crm5", "agent_url": "http://169.254.3.4:8701"}
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["agent_url"] == "http://169.254.3.4:8701"


async def test_a_registered_url_is_stored_in_normal_form(controller: Harness) -> None:
    resp = await controller.client.post(
        "/api/v1/nodes", json={"name": "crm4", "agent_url": "HTTP://CRM4.Example.com:80/"}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["agent_url"] == "http://crm4.example.com"


@pytest.mark.parametrize(
    "body",
    [
        {"do_load_balancing": 0},
        {"do_load_balancing": 1},
        {"do_load_balancing": "true"},
        {"do_load_balancing": None, "http_port": "8080"},
        {"http_port": True},
        {"http_port": 8080.0},
        {"http_port": 70000},
        {"server_names": ["x" * 64]},
    ],
)
async def test_config_takes_only_the_types_it_names(controller: Harness, body: dict[str, Any]) -> None:
    assert_invalid(await controller.client.put("/api/v1/cluster/config", json=body))


async def test_a_real_boolean_is_taken(controller: Harness) -> None:
    resp = await controller.client.put("/api/v1/cluster/config", json={"do_load_balancing": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["sysparams"]["do_load_balancing"] is True


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"do_load_balancing": true, "do_load_balancing": false}', "duplicate key"),
        (b'{"http_port": NaN}', "NaN"),
        (b'{"http_port": Infinity}', "Infinity"),
        (b'{"http_port": 1e400}', "out of range"),
        (b'{"server_names": ' + b"[" * 40 + b"]" * 40 + b"}", "nested"),
        (b'{"http_port": ' + b"9" * 5000 + b"}", "digits"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"{not json", "not JSON"),
    ],
)
async def test_json_is_strict_on_the_controller(controller: Harness, raw: bytes, why: str) -> None:
    resp = await controller.client.put(
        "/api/v1/cluster/config", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_invalid(resp, why)


async def test_json_is_strict_on_the_agent(agent: SandboxAgent) -> None:
    raw = b'{"op_id": "a1", "action": "stop_web", "action": "run_installer", "params": {}}'
    resp = await agent.client.post(
        "/v1/operations", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_invalid(resp, "duplicate key 'action'")
    assert (await agent.client.get("/v1/operations")).json() == []


async def _library(controller: Harness) -> None:
    resp = await controller.client.put(
        "/api/v1/library", json={"doc_store": "\\\\fileserver\\CRMLibrary\\Library", "verify": False}
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("\\\\attacker.example\\share", "not on the library's share"),
        ("\\\\127.0.0.1\\c$", "administrative"),
        ("\\\\fileserver\\ADMIN$\\x", "administrative"),
        ("\\\\?\\C:\\Windows", "server name"),
        ("\\\\fileserver\\CRMLibrary\\Library.", "dot or a space"),
        ("\\\\fileserver\\CRMLibrary\\Library ", "dot or a space"),
        ("\\\\fileserver\\CRMLibrary\\NUL", "device"),
        ("\\\\fileserver\\CRMLibrary\\\uff0e\uff0e\\x", "'..'"),
    ],
)
async def test_library_paths_stay_on_the_configured_share(controller: Harness, path: str, why: str) -> None:
    await _library(controller)
    for method, url, body in (
        ("PUT", "/api/v1/library", {"doc_store": path, "verify": False}),
        ("PUT", "/api/v1/cluster/config", {"doc_templates": path}),
        ("POST", "/api/v1/library/verify", {"paths": [path]}),
    ):
        assert_invalid(await controller.client.request(method, url, json=body), why)
    same_share = await controller.client.put(
        "/api/v1/library", json={"doc_templates": "\\\\FILESERVER\\crmlibrary\\Templates", "verify": False}
    )
    assert same_share.status_code == 200, same_share.text


@pytest.mark.parametrize(
    ("destination", "why"),
    [
        ("backup.", "dot or a space"),
        ("backup ", "dot or a space"),
        ("NUL", "device"),
        ("runs/nul.txt", "device"),
        ("COM\u00b9", "device"),  # COM¹ is COM1 once normalised
        ("\uff0e\uff0e/escape", "'..'"),
        ("a/\u2025/b", "'..'"),  # TWO DOT LEADER
        ("C:\\Windows", "absolute"),
        ("\\\\host\\share", "absolute"),
        ("file.txt:stream", "':'"),
    ],
)
async def test_agent_refuses_paths_that_alias_something_else(
    agent: SandboxAgent, destination: str, why: str
) -> None:
    resp = await agent.client.post(
        "/v1/operations",
        json={"op_id": "b1", "action": "backup_program_files", "params": {"destination": destination}},
    )
    assert_invalid(resp, why)


async def test_agent_probes_no_admin_share_and_no_other_host(agent: SandboxAgent, tmp_path: Any) -> None:
    from config.crm_schema import crm_tables
    from config.database import make_engine
    from config.sysparams import SysParamsStore

    resp = await agent.client.post(
        "/v1/operations",
        json={"op_id": "p1", "action": "probe_library", "params": {"path": "\\\\127.0.0.1\\c$"}},
    )
    assert_invalid(resp, "administrative")
    engine = make_engine(agent.driver.settings.crm_url)
    try:
        async with engine.begin() as conn:
            store = SysParamsStore(crm_tables(), agent.driver.settings.sysparam_row_names())
            await store.write(conn, {"doc_store": "\\\\fileserver\\CRMLibrary\\Library"})
    finally:
        await engine.dispose()
    other = await agent.run("p2", "probe_library", {"path": "\\\\attacker.example\\share\\x"})
    assert other.state == "failed" and "not on the library's share" in (other.error or "")
    assert not (tmp_path / "library" / "x").exists()
    ours = await agent.run("p3", "probe_library", {"path": "\\\\fileserver\\CRMLibrary\\Library"})
    assert ours.state == "succeeded", ours.error


async def test_agent_ids_are_bounded_and_integers(agent: SandboxAgent) -> None:
    for ids in ([2**31], [-1], ["5"], [1.0], [True]):
        resp = await agent.client.post(
            "/v1/operations",
            json={"op_id": "f1", "action": "fingerprint_records", "params": {"ids": ids}},
        )
        assert_invalid(resp)
