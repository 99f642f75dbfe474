"""The client commands against a running ``crmcluster demo`` (real processes), human and ``--json``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.demo_process import api, crmcluster, running_demo, wait_for

pytestmark = pytest.mark.slow
LICENSE = "DEMO-2017R1-LICENSE-KEY"
SQL_LOGIN = ("--sql-server", "dbserver", "--sql-user", "crmupgrade", "--sql-password", "demo-sql-password")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_demo(tmp_path_factory.mktemp("cli") / "demo") as data:
        yield data


def run(demo: dict[str, Any], *args: str) -> Any:
    proc = crmcluster(*args, "--demo", demo["data_dir"])
    return proc


def test_status_for_people_and_scripts(demo: dict[str, Any]) -> None:
    human = run(demo, "status")
    assert human.returncode == 0, human.stderr
    for word in (
        "crm1",
        "crm2",
        "crm3",
        "database",
        "replication_engine",
        "indexer",
        "escalation",
        "up",
        "7.3",
    ):
        assert word in human.stdout
    assert demo["admin_token"] not in human.stdout

    data = json.loads(run(demo, "status", "--json").stdout)
    nodes = {n["name"]: n for n in data["nodes"]}
    assert set(nodes) == {"crm1", "crm2", "crm3"}
    assert "database" in nodes["crm1"]["roles"] and "indexer" in nodes["crm2"]["roles"]
    assert all(n["state"] == "up" and n["version"] == "7.3" for n in nodes.values())
    assert isinstance(data["warnings"], list)


def test_drain_and_undrain(demo: dict[str, Any]) -> None:
    drained = run(demo, "nodes", "drain", "crm3", "--json")
    assert drained.returncode == 0, drained.stderr
    states = {n["name"]: n["state"] for n in json.loads(run(demo, "status", "--json").stdout)["nodes"]}
    assert states["crm3"] == "draining"
    undrained = run(demo, "nodes", "undrain", "crm3")
    assert undrained.returncode == 0 and "crm3: up" in undrained.stdout


def test_operations_read_and_check(demo: dict[str, Any]) -> None:
    config = json.loads(run(demo, "config", "show", "--json").stdout)
    assert config["server_names"] == ["crm1", "crm2", "crm3"]
    engine = json.loads(run(demo, "replication-engine", "show", "--json").stdout)
    assert engine["node"] == "crm1"
    services = run(demo, "services", "show")
    assert services.returncode == 0 and "Indexer" in services.stdout and "crm2" in services.stdout
    for args in (("capacity",), ("library", "verify"), ("metadata", "refresh")):
        proc = run(demo, *args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)


def test_errors_are_one_line_and_fail(demo: dict[str, Any]) -> None:
    proc = run(demo, "nodes", "drain", "crm9")
    assert proc.returncode == 1
    assert proc.stderr.startswith("crmcluster: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_upgrade_plan_start_watch_and_checklist(demo: dict[str, Any], tmp_path: Path) -> None:
    plan = run(demo, "upgrade", "plan", "--license-key", LICENSE, *SQL_LOGIN, "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    planned = json.loads(plan.stdout)
    assert planned["status"] == "planned" and planned["plan"]
    assert LICENSE not in plan.stdout and "demo-sql-password" not in plan.stdout

    assert planned["options"]["require_acceptance"] is True  # the clean run asks for acceptance
    started = run(demo, "upgrade", "start", planned["id"], "--no-watch", "--json")
    assert started.returncode == 0, started.stderr
    with api(demo) as client:
        wait_for(
            lambda: client.get(f"/upgrades/{planned['id']}").json()["status"] == "awaiting_acceptance",
            what="the acceptance hold",
            timeout=300,
        )
    shown = run(demo, "upgrade", "show", planned["id"])
    assert "Testing a live upgrade" in shown.stdout and "Log on is successful" in shown.stdout
    accepted = run(
        demo, "upgrade", "accept", planned["id"], "--tick", "mail_merge=quote merged", "--note", "UAT"
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    watched = crmcluster("upgrade", "watch", planned["id"], "--demo", demo["data_dir"], timeout=300)
    assert watched.returncode == 0, watched.stdout[-3000:] + watched.stderr
    assert "phase database_server" in watched.stdout and "server crm1" in watched.stdout
    assert f"upgrade {planned['id']} ended succeeded" in watched.stdout
    rollback = run(demo, "upgrade", "rollback", planned["id"])  # users are back: refused
    assert rollback.returncode != 0 and "accept_data_loss_since" in rollback.stderr

    with api(demo) as client:
        versions = wait_for(
            lambda: {n["version"] for n in client.get("/cluster").json()["nodes"]} == {"2017 R1"},
            what="every server on 2017 R1",
        )
    assert versions

    out = tmp_path / "checklist.html"
    saved = run(demo, "upgrade", "checklist", "-o", str(out))
    assert saved.returncode == 0, saved.stderr
    assert "<html" in out.read_text().lower()
