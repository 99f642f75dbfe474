"""Client commands against a fake controller: tables, ``--json``, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.fake_controller import CLUSTER, TOKEN, URL, FakeController, error, invoke, run, step


@pytest.fixture
def fake() -> FakeController:
    return FakeController({("GET", "/api/v1/cluster"): CLUSTER, ("GET", "/api/v1/upgrades"): {"runs": []}})


def test_status_table_names_every_server_role_state_version_and_warning(fake: FakeController) -> None:
    result = invoke(fake, "status")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for word in ("crm1", "crm2", "database", "replication_engine", "draining", "7.3", "no_escalation"):
        assert word in out
    assert "127.0.0.1:9002" in out
    # bearer token sent, never shown
    assert fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in out


def test_status_json_is_the_controllers_answer(fake: FakeController) -> None:
    result = invoke(fake, "status", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == CLUSTER


def test_no_controller_configured_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(None, "status", env={})
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("crmcluster: no controller:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_json_gives_url_and_token(tmp_path: Path, fake: FakeController) -> None:
    (tmp_path / "demo.json").write_text(json.dumps({"controller_url": URL, "admin_token": TOKEN}))
    result = invoke(fake, "status", "--json", "--demo", str(tmp_path), env={})
    assert result.exit_code == 0, result.stderr
    assert str(fake.requests[0].url).startswith(URL + "/api/v1/cluster")


def test_api_error_is_one_line_with_its_code(fake: FakeController) -> None:
    fake.routes[("POST", "/api/v1/nodes/crm9/drain")] = error(404, "not_found", "no node named 'crm9'")
    result = invoke(fake, "nodes", "drain", "crm9")
    assert result.exit_code == 1
    assert result.stderr == "crmcluster: no node named 'crm9' (HTTP 404 not_found)\n"
    assert "Traceback" not in result.output


def test_unreachable_controller_is_one_line() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    result = invoke(refuse, "status", "--json")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"crmcluster: cannot reach the controller at {URL}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_drain_waits_for_the_job_and_undrain_shows_the_state(fake: FakeController) -> None:
    job: dict[str, Any] = {
        "id": "j1",
        "kind": "drain",
        "target": "crm2",
        "status": "running",
        "message": None,
        "steps": [],
    }
    polls = iter([job, job | {"status": "succeeded", "message": "0 users left"}])
    fake.routes[("POST", "/api/v1/nodes/crm2/drain")] = httpx.Response(202, json=job)
    fake.routes[("GET", "/api/v1/jobs/j1")] = lambda _r: next(polls)
    result = invoke(fake, "nodes", "drain", "crm2", "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"

    fake.routes[("POST", "/api/v1/nodes/crm2/undrain")] = CLUSTER["nodes"][1] | {"state": "up"}
    result = invoke(fake, "nodes", "undrain", "crm2")
    assert result.exit_code == 0
    assert "crm2: up" in result.stdout


def test_a_failed_job_fails_the_command(fake: FakeController) -> None:
    job = {
        "id": "j2",
        "kind": "remove",
        "target": "crm2",
        "status": "failed",
        "message": "agent down",
        "steps": [],
    }
    fake.routes[("DELETE", "/api/v1/nodes/crm2")] = httpx.Response(202, json=job)
    result = invoke(fake, "nodes", "remove", "crm2")
    assert result.exit_code == 1
    assert "agent down" in result.stdout


def test_nodes_add_registers_and_join_needs_a_license_key(fake: FakeController) -> None:
    fake.routes[("POST", "/api/v1/nodes")] = httpx.Response(201, json=CLUSTER["nodes"][1])
    result = invoke(fake, "nodes", "add", "crm2", "--agent-url", "http://127.0.0.1:8702", "--role", "indexer")
    assert result.exit_code == 0, result.stderr
    assert fake.bodies("POST", "/api/v1/nodes")[0] == {
        "name": "crm2",
        "agent_url": "http://127.0.0.1:8702",
        "fqdn": None,
        "roles": ["indexer"],
        "join": False,
    }
    result = invoke(fake, "nodes", "add", "crm4", "--agent-url", "http://x:1", "--join")
    assert result.exit_code == 2
    assert "--license-key" in result.stderr


def test_config_set_sends_typed_partial_body(fake: FakeController) -> None:
    fake.routes[("PUT", "/api/v1/cluster/config")] = {"sysparams": CLUSTER["sysparams"], "warnings": []}
    result = invoke(fake, "config", "set", "ServerNames=crm1;crm2", "do-load-balancing=no", "http_port=443")
    assert result.exit_code == 0, result.stderr
    assert fake.bodies("PUT", "/api/v1/cluster/config") == [
        {"server_names": ["crm1", "crm2"], "do_load_balancing": False, "http_port": 443}
    ]
    assert "CRM Server Names" in result.stdout


@pytest.mark.parametrize(
    ("word", "says"),
    [("colour=blue", "not a cluster setting"), ("http_port=https", "not a whole number"), ("x", "key=value")],
)
def test_config_set_refuses_bad_words_before_calling(fake: FakeController, word: str, says: str) -> None:
    result = invoke(fake, "config", "set", word)
    assert result.exit_code == 2
    assert says in result.stderr
    assert not fake.bodies("PUT", "/api/v1/cluster/config")


def test_services_and_replication_engine(fake: FakeController) -> None:
    services = {
        "services": {
            "indexer": {"node": "crm2", "nodes": ["crm2"], "state": "running"},
            "escalation": {"node": None, "nodes": [], "state": None},
            "email_manager": {"node": "crm1", "nodes": ["crm1"], "state": "running"},
        }
    }
    fake.routes[("GET", "/api/v1/services")] = services
    fake.routes[("PUT", "/api/v1/services")] = services | {"changed": False, "job": None}
    result = invoke(fake, "services", "set", "escalation=crm2")
    assert result.exit_code == 0, result.stderr
    assert fake.bodies("PUT", "/api/v1/services") == [{"escalation": "crm2"}]
    assert "Email Manager" in result.stdout

    engine = {
        "node": "crm1",
        "holders": ["crm1"],
        "fenced": [],
        "nodes": [{"name": "crm1", "replication_engine": True}],
    }
    fake.routes[("GET", "/api/v1/replication-engine")] = engine
    result = invoke(fake, "replication-engine", "show")
    assert "Replication Engine on: crm1" in result.stdout


def test_library_verify_exit_code_follows_the_probe(fake: FakeController) -> None:
    fake.routes[("POST", "/api/v1/library/verify")] = {
        "ok": False,
        "nodes": [
            {"name": "crm1", "ok": True, "message": "ok"},
            {"name": "crm2", "ok": False, "message": "denied"},
        ],
    }
    result = invoke(fake, "library", "verify")
    assert result.exit_code == 1
    assert "denied" in result.stdout


def test_capacity_fails_without_headroom(fake: FakeController) -> None:
    cap = {
        "nodes": [{"name": "crm1", "dll_connections": 1, "tomcat_pool": 10}],
        "required": 11,
        "max_connections": 8,
        "headroom": -3,
    }
    fake.routes[("GET", "/api/v1/capacity")] = cap
    result = invoke(fake, "capacity")
    assert result.exit_code == 1
    assert "-3" in result.stdout


def test_upgrade_plan_shows_preflight_and_plan_and_never_the_license_key(fake: FakeController) -> None:
    planned = run(
        "planned",
        [step("s1", "freeze", "crm2", "stop_web"), step("s2", "database_server", "crm1", "run_installer")],
    )
    fake.routes[("POST", "/api/v1/upgrades")] = planned
    result = invoke(fake, "upgrade", "plan", "--license-key", "LIC-KEY-SECRET-1", "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    body = fake.bodies("POST", "/api/v1/upgrades")[0]
    assert body["license_key"] == "LIC-KEY-SECRET-1"
    assert body["batch_size"] == 2 and body["target_version"] == "2017 R1"
    for word in ("license", "dta_objects", "run_installer", "stop_web", "upgrade start r1"):
        assert word in result.stdout
    assert "LIC-KEY-SECRET-1" not in result.output


def test_upgrade_plan_blocked_by_preflight_exits_1(fake: FakeController) -> None:
    blocked = run(
        "planned", [], preflight=[{"name": "sa_login", "status": "failed", "message": "SQL login is sa"}]
    )
    fake.routes[("POST", "/api/v1/upgrades")] = blocked
    result = invoke(fake, "upgrade", "plan", "--license-key", "LIC-KEY-SECRET-1")
    assert result.exit_code == 1
    assert "sa_login" in result.stdout


def test_run_actions_default_to_the_current_run(fake: FakeController) -> None:
    fake.routes[("GET", "/api/v1/upgrades")] = {
        "runs": [run("succeeded", [], id="r0", created_at="2026-11-27"), run("running", [])]
    }
    fake.routes[("POST", "/api/v1/upgrades/r1/pause")] = run("paused", [])
    result = invoke(fake, "upgrade", "pause")
    assert result.exit_code == 0, result.stderr
    assert "paused" in result.stdout and "upgrade resume r1" in result.stdout


def test_checklist_is_saved_as_html(fake: FakeController, tmp_path: Path) -> None:
    fake.routes[("GET", "/api/v1/upgrades/r1/checklist")] = lambda r: (
        httpx.Response(200, text="<html>checklist</html>", headers={"content-type": "text/html"})
        if "text/html" in r.headers["accept"]
        else httpx.Response(200, json={"sections": []})
    )
    out = tmp_path / "c.html"
    result = invoke(fake, "upgrade", "checklist", "r1", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == "<html>checklist</html>"
    result = invoke(fake, "upgrade", "checklist", "r1", "--json")
    assert json.loads(result.stdout) == {"sections": []}


def test_upgrade_plan_without_a_license_key_off_a_terminal_is_a_usage_error(fake: FakeController) -> None:
    result = invoke(fake, "upgrade", "plan")
    assert result.exit_code == 2
    assert result.stderr == "crmcluster: --license-key (or CRMCLUSTER_LICENSE_KEY) is required\n"
    assert not fake.bodies("POST", "/api/v1/upgrades")


def test_upgrade_plan_passes_the_sql_login_and_never_shows_its_password(fake: FakeController) -> None:
    fake.routes[("POST", "/api/v1/upgrades")] = run("planned", [])
    result = invoke(
        fake,
        "upgrade",
        "plan",
        "--license-key",
        "LIC-KEY-SECRET-1",
        "--sql-server",
        "dbserver",
        "--sql-user",
        "crmupgrade",
        "--sql-password",
        "Pa55-word-secret",
        "--disable-triggers",
    )
    assert result.exit_code == 0, result.stderr
    body = fake.bodies("POST", "/api/v1/upgrades")[0]
    assert body["database"] == {
        "server": "dbserver",
        "port": 1433,
        "user": "crmupgrade",
        "password": "Pa55-word-secret",
    }
    assert body["disable_triggers"] is True
    assert "Pa55-word-secret" not in result.output

    result = invoke(fake, "upgrade", "plan", "--license-key", "K" * 10, "--sql-user", "crmupgrade")
    assert result.exit_code == 2 and "--sql-server and --sql-user go together" in result.stderr


def test_a_step_awaiting_an_operator_is_shown_with_its_choices_and_confirmed(fake: FakeController) -> None:
    waiting = step("21-run_installer-crm1", "database_server", "crm1", "run_installer", "awaiting_operator")
    choices = [
        "choose 'Upgrade Previous Version of CRM' and the install CRM",
        "complete all fields on the Registration page",
    ]
    fake.routes[("GET", "/api/v1/upgrades/r1")] = run(
        "awaiting_operator",
        [waiting],
        awaiting_operator=[
            {"step": waiting["id"], "node": "crm1", "action": "run_installer", "choices": choices}
        ],
    )
    shown = invoke(fake, "upgrade", "show", "r1")
    assert shown.exit_code == 0, shown.stderr
    for text in (*choices, "upgrade confirm r1 21-run_installer-crm1"):
        assert text in shown.stdout
    fake.routes[("POST", "/api/v1/upgrades/r1/steps/21-run_installer-crm1/confirm")] = run(
        "running", [{**waiting, "status": "running"}]
    )
    done = invoke(fake, "upgrade", "confirm", "r1", "21-run_installer-crm1", "--note", "ran the wizard")
    assert done.exit_code == 0, done.stderr
    assert fake.bodies("POST", "/api/v1/upgrades/r1/steps/21-run_installer-crm1/confirm") == [
        {"note": "ran the wizard"}
    ]
