"""Fault injection on the sandbox: a failing upgrade leaves a failed log, errors in the log are
read, an invalid key is refused, a fault with a count lets a retry succeed."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import SettingError
from node_agent.drivers.sandbox.faults import Faults
from node_agent.testing import SandboxAgent

UPGRADE = {
    "mode": "upgrade",
    "version": "2017 R1",
    "license_key": "FAULTY-KEY-12345",
    "database": {"server": "sql01", "user": "crm", "password": "pw-fault-1"},
}


async def test_a_failing_upgrade_stops_part_way_and_its_log_says_so(db_agent: SandboxAgent) -> None:
    before = (await db_agent.run("fp0", "fingerprint_records")).result
    assert before is not None
    db_agent.driver.faults.set("run_installer", "fail", times=1)
    rec = await db_agent.run("u1", "run_installer", UPGRADE)
    assert rec.state == "failed" and "views.es" in (rec.error or "")
    log = (await db_agent.run("l1", "read_upgrade_log")).result
    assert log is not None
    assert log["ok"] is False and log["completed"] is False and log["failed_scripts"] == ["views.es"]
    assert log["must_fix"] and log["error_files"] == ["*views.es.html"]
    # Half-upgraded: the tree is new, the schema changed, the database version is not.
    status = (await db_agent.client.get("/v1/status")).json()
    assert status["version"] == "2017 R1" and status["web"] == "stopped"
    after = (
        await db_agent.run("fp1", "fingerprint_records", {"ids": [int(i) for i in before["records"]]})
    ).result
    assert after is not None
    assert after["schema"] != before["schema"] and after["schema_version"] == "7.3"
    # The fault fired once: run again (a new op id), the scripts pick up where they can.
    db_agent.driver.tree.write_dll("7.3")
    rec = await db_agent.run("u2", "run_installer", UPGRADE)
    assert rec.state == "succeeded", rec.error
    assert (await db_agent.run("l2", "read_upgrade_log")).result["ok"] is True  # type: ignore[index]


@pytest.mark.parametrize(
    ("kind", "failed", "must_fix"), [("log_error", ["views.es"], False), ("nb", [], True)]
)
async def test_errors_in_the_log_of_an_upgrade_that_finished(
    db_agent: SandboxAgent, kind: str, failed: list[str], must_fix: bool
) -> None:
    db_agent.driver.faults.set("run_installer", kind)
    assert (await db_agent.run("u1", "run_installer", UPGRADE)).state == "succeeded"
    log = (await db_agent.run("l1", "read_upgrade_log")).result
    assert log is not None
    assert log["ok"] is False and log["failed_scripts"] == failed
    assert bool(log["must_fix"]) is must_fix


async def test_fail_hang_invalid_per_action(db_agent: SandboxAgent) -> None:
    db_agent.driver.faults.set("backup_program_files", "fail")
    rec = await db_agent.run("b1", "backup_program_files")
    assert rec.state == "failed" and "injected fault" in (rec.error or "")
    assert not (db_agent.driver.backup_root / "program_files").exists()
    db_agent.driver.faults.set("check_license", "invalid")
    rec = await db_agent.run("c1", "check_license", {"license_key": "VALID-LOOKING-KEY"})
    assert rec.state == "failed" and "not valid" in (rec.error or "")
    db_agent.driver.faults.clear()
    assert (await db_agent.run("b2", "backup_program_files")).state == "succeeded"


async def test_a_license_key_registers_five_times_at_most(db_agent: SandboxAgent) -> None:
    for i in range(5):
        db_agent.driver.tree.write_dll("7.3")
        rec = await db_agent.run(f"r{i}", "run_installer", {**UPGRADE, "register": True})
        assert rec.state == "succeeded", rec.error
    db_agent.driver.tree.write_dll("7.3")
    rec = await db_agent.run("r5", "run_installer", {**UPGRADE, "register": True})
    assert rec.state == "failed" and "five times" in (rec.error or "")


def test_the_fault_setting_is_checked() -> None:
    f = Faults("run_installer:fail, backup_registry:hang,restore_database:crash*2")
    assert f.take(__import__("node_agent.protocol").protocol.Action.RESTORE_DATABASE, "crash") == "crash"
    for bad in ("nope:fail", "stop_web:explode", "stop_web:fail*0"):
        with pytest.raises(SettingError):
            Faults(bad)


def test_faults_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import AgentSettings, load_settings

    monkeypatch.setenv("CRMCLUSTER_AGENT_TOKEN", "agent-token-0123456789abcdef")
    monkeypatch.setenv("CRMCLUSTER_SANDBOX_FAULTS", "run_installer:fail")
    monkeypatch.setenv("CRMCLUSTER_SANDBOX_ROLES", "database,replication_engine")
    monkeypatch.setenv("CRMCLUSTER_SANDBOX_VERSION", "7.2")
    s = load_settings(AgentSettings, data_dir=tmp_path)
    assert s.roles == ["database", "replication_engine"] and s.sandbox_version == "7.2"
    assert Faults(s.sandbox_faults).spec() == "run_installer:fail"
    monkeypatch.setenv("CRMCLUSTER_SANDBOX_ROLES", "database,chef")
    with pytest.raises(SettingError, match="CRMCLUSTER_SANDBOX_ROLES"):
        load_settings(AgentSettings, data_dir=tmp_path)


async def test_a_72_node_upgrades_too(tmp_path: Path, sqlite_url: str, tokens: dict[str, str]) -> None:
    from node_agent.testing import running_sandbox_agent

    async with running_sandbox_agent(
        name="old1",
        data_dir=tmp_path / "old1",
        crm_db_url=sqlite_url,
        token=tokens["agent"],
        roles=["database"],
        version="7.2",
    ) as agent:
        assert (await agent.client.get("/v1/status")).json()["version"] == "7.2"
        rec = await agent.run("u", "run_installer", UPGRADE)
        assert rec.state == "succeeded" and rec.result is not None and rec.result["from_version"] == "7.2"
        log = (await agent.run("l", "read_upgrade_log")).result
        assert log is not None and log["from_version"] == "7.2" and log["to_version"] == "2017 R1"


async def test_a_fault_fails_the_installer_on_a_non_database_server_too(
    db_agent: SandboxAgent, tmp_path: Path, db_url: str, tokens: dict[str, str]
) -> None:
    from node_agent.testing import running_sandbox_agent

    assert (await db_agent.run("u0", "run_installer", UPGRADE)).state == "succeeded"
    async with running_sandbox_agent(
        name="crm2",
        data_dir=tmp_path / "crm2",
        crm_db_url=db_url,
        token=tokens["agent"],
        roles=["indexer"],
        faults="run_installer:fail",
    ) as crm2:
        upgrade = {k: v for k, v in UPGRADE.items() if k != "database"}  # "backup is not required"
        rec = await crm2.run("u1", "run_installer", upgrade)
        assert rec.state == "failed" and "views.es" in (rec.error or "")
        log = (await crm2.run("l1", "read_upgrade_log")).result
        assert log is not None and log["ok"] is False and log["failed_scripts"] == ["views.es"]
