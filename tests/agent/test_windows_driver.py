"""The windows driver as Windows, SQL Server and InstallShield really work, seen through its dry
run: the agent runs nothing and records every command exactly as Windows would receive it, against
a modelled server that is as strict as the real one (OS error 3 for a missing backup folder,
ResultCode for the installer, a folder in use cannot be renamed, …).

Driven over HTTP (``httpx.ASGITransport``) like the controller drives a real agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

import httpx
import pytest

from config.settings import AgentSettings
from node_agent.app import create_app
from node_agent.drivers.windows import WindowsDriver
from node_agent.drivers.windows.model import ModelledServer

DB_URL = "mssql+aioodbc://crmsql:S3cret-Pw9@sql01:1433/CRM?driver=ODBC+Driver+18+for+SQL+Server"
KEY = "ABCDE-12345-FGHIJ"
PROGRAMS = r"C:\Program Files (x86)\Sage\CRM"
SQL_DIR = r"E:\SQLBackups"


@dataclass
class Agent:
    client: httpx.AsyncClient
    driver: WindowsDriver
    app: Any

    @property
    def model(self) -> ModelledServer:
        model: ModelledServer = self.driver.model
        return model

    async def run(self, op_id: str, action: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        r = await self.client.post(
            "/v1/operations", json={"op_id": op_id, "action": action, "params": params or {}}
        )
        assert r.status_code == 202, r.text
        await self.app.state.operations.wait(op_id)
        rec: dict[str, Any] = (await self.client.get(f"/v1/operations/{op_id}")).json()
        return rec

    async def ok(self, op_id: str, action: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        rec = await self.run(op_id, action, params)
        assert rec["state"] == "succeeded", (rec["error"], rec["log_tail"])
        result: dict[str, Any] = rec["result"]
        return result


def settings(tmp_path: Path, token: str, **extra: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "agent_token": token,
        "name": "crm1",
        "driver": "windows",
        "dry_run": True,
        "data_dir": tmp_path,
        "crm_db_url": DB_URL,
        "sandbox_roles": "database,replication_engine,indexer",
        "warmup_password": "Warm-Up-Pw7",
    }
    return AgentSettings(_env_file=None, **{**values, **extra})


@pytest.fixture
async def agent(tmp_path: Path, tokens: dict[str, str]) -> AsyncIterator[Agent]:
    app = create_app(settings(tmp_path, tokens["agent"]), background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://crm1.agent",
            headers={"Authorization": f"Bearer {tokens['agent']}"},
        ) as client:
            yield Agent(client, app.state.driver, app)


UPGRADE = {
    "mode": "upgrade",
    "version": "2017 R1",
    "license_key": KEY,
    "database": {"server": "sql01", "user": "crmsql", "password": "S3cret-Pw9"},
    "backup": False,
}


async def test_the_dry_run_records_every_command_and_runs_nothing(agent: Agent, tmp_path: Path) -> None:
    status = (await agent.client.get("/v1/status")).json()
    assert status["driver"] == "windows (dry run)" and status["version"] == "7.3"
    assert status["services"]["indexer"] == "running" and status["services"]["escalation"] == "not_installed"

    res = await agent.ok("b1", "backup_database")
    disk = r"E:\SQLBackups\database\b1\CRM.bak"
    assert res["commands"][:3] == [
        r"[master] EXEC master.sys.xp_create_subdir ? -- ? = N'E:\SQLBackups\database\b1'",
        "[master] BACKUP DATABASE [CRM] TO DISK = ? WITH COPY_ONLY, CHECKSUM, INIT, FORMAT, NAME = ? "
        f"-- ? = N'{disk}', N'crmcluster b1'",
        f"[master] RESTORE VERIFYONLY FROM DISK = ? WITH CHECKSUM -- ? = N'{disk}'",
    ]
    assert res["commands"][3].startswith("[msdb] SELECT TOP (1) b.backup_size, b.has_backup_checksums")
    assert res["bytes"] > 0 and res["checksum"].startswith("backup_set_uuid:") and res["copy_only"] is True

    res = await agent.ok("p1", "backup_program_files")
    assert res["commands"][:2] == [
        rf'robocopy "{PROGRAMS}\CRM" D:\CRMBackups\program_files\p1\CRM /E /COPY:DATSO /DCOPY:DAT /R:2 /W:5 /NP /NFL /NDL',  # noqa: E501
        rf'robocopy "{PROGRAMS}\Services" D:\CRMBackups\program_files\p1\Services /E /COPY:DATSO /DCOPY:DAT /R:2 /W:5 /NP /NFL /NDL',  # noqa: E501
    ]
    assert res["folders"] == ["CRM", "Services"] and res["sha256"]

    res = await agent.ok("m1", "reload_metadata")
    assert res["commands"][:2] == [
        r'C:\Windows\System32\inetsrv\appcmd.exe list app "Default Web Site/CRM" /text:applicationPool',
        r"C:\Windows\System32\inetsrv\appcmd.exe recycle apppool /apppool.name:CRMAppPool",
    ]
    res = await agent.ok("d1", "register_dll")
    assert res["commands"] == [rf'C:\Windows\SysWOW64\regsvr32.exe /s "{PROGRAMS}\CRM\WWWRoot\eware.dll"']
    # Nothing ran on this machine: no process, no file outside the agent's own data folder.
    assert not Path("D:").exists() and not (tmp_path / "CRMBackups").exists()


async def test_services_are_moved_by_sc_config_never_deleted(agent: Agent) -> None:
    res = await agent.ok("s1", "install_service", {"service": "escalation"})
    assert res["commands"] == [
        "sc.exe query type= service state= all",
        "sc.exe config CRMEscalationService start= auto",
        "sc.exe query CRMEscalationService",
    ]
    res = await agent.ok("s2", "uninstall_service", {"service": "indexer"})
    assert "sc.exe config CRMIndexerService start= disabled" in res["commands"]
    assert not any("delete" in c or "create" in c for c in res["commands"])
    rec = await agent.run("s3", "start_service", {"service": "indexer"})  # disabled: placed elsewhere
    assert rec["state"] == "failed" and "disabled on this server" in rec["error"]
    assert (await agent.client.get("/v1/status")).json()["services"]["indexer"] == "not_installed"


async def test_the_installer_replays_a_response_file_and_reads_result_code(agent: Agent) -> None:
    res = await agent.ok("i1", "run_installer", UPGRADE)
    work = r"C:\ProgramData\crmcluster\agent\installer"
    assert rf"C:\CRMSetup\Setup.exe /s /f1{work}\i1.iss /f2{work}\i1.log" in res["commands"]
    assert rf"agent: delete {work}\i1.iss" in res["commands"]  # deleted afterwards
    assert res["result_code"] == 0 and res["version"] == "2017 R1" and res["upgrade_log_at"]
    text = str(res)
    assert KEY not in text and "S3cret-Pw9" not in text
    # The key reached the response file only, and that file is gone.
    assert not await agent.model.exists(PureWindowsPath(work) / "i1.iss")
    log = await agent.ok("l1", "read_upgrade_log")
    assert log["failed_scripts"] == [] and log["written_at"] == res["upgrade_log_at"]


async def test_installer_failures_are_read_from_the_setup_log_not_the_exit_code(agent: Agent) -> None:
    template = PureWindowsPath(r"C:\CRMSetup\responses\upgrade-2017 R1.iss")
    recorded = await agent.model.read_text(template)
    # A response file still holding the key the administrator recorded with: refused before running.
    await agent.model.write_text(template, recorded.replace("{{license_key}}", "OLD-KEY-1"))
    rec = await agent.run("i2", "run_installer", UPGRADE)
    assert rec["state"] == "failed" and "{{license_key}}" in rec["error"]
    # InstallShield answers ResultCode -3 (its exit code is 0) for a response file missing data.
    await agent.model.write_text(template, recorded + "szExtra={{license_key}}{{db_password}}")
    agent.model._setup_fault = -3
    rec = await agent.run("i3", "run_installer", UPGRADE)
    assert rec["state"] == "failed" and "ResultCode -3" in rec["error"], rec["error"]


async def test_a_stale_upgrade_log_is_not_success(agent: Agent) -> None:
    agent.model._write_upgrade_log = False  # setup ran, but this upgradelog.html is the 7.3 one
    rec = await agent.run("i4", "run_installer", UPGRADE)
    assert rec["state"] == "failed" and "stale log" in rec["error"]
    rec = await agent.run("l2", "read_upgrade_log")
    assert rec["state"] == "failed" and "stale log" in rec["error"]


async def test_restore_keeps_exclusive_access_on_one_connection_and_renames(agent: Agent) -> None:
    await agent.ok("b1", "backup_database")
    await agent.ok("p1", "backup_program_files")
    await agent.ok("r1", "backup_registry")
    await agent.ok("i1", "run_installer", UPGRADE)
    assert agent.model.db_version == "2017 R1"
    res = await agent.ok("x1", "restore_database", {"source": "database/b1"})
    assert res["commands"][-3:] == [
        "[master] ALTER DATABASE [CRM] SET SINGLE_USER WITH ROLLBACK IMMEDIATE",
        r"[master] RESTORE DATABASE [CRM] FROM DISK = ? WITH REPLACE, CHECKSUM -- ? = N'E:\SQLBackups\database\b1\CRM.bak'",  # noqa: E501
        "[master] ALTER DATABASE [CRM] SET MULTI_USER",
    ]
    assert agent.model.db_version == "7.3"
    # The program files cannot be renamed while IIS, Tomcat or a CRM service holds them.
    rec = await agent.run("x2", "restore_program_files", {"source": "program_files/p1"})
    assert rec["state"] == "failed" and "being used" in rec["error"]
    for i, action in enumerate(("stop_web", "stop_tomcat")):
        await agent.ok(f"st{i}", action)
    await agent.ok("st3", "stop_service", {"service": "indexer"})
    res = await agent.ok("x3", "restore_program_files", {"source": "program_files/p1"})
    assert res["path"] == "CRM" and res["failed_copy"] == "CRM_failed"
    assert (
        await agent.model.read_text(PureWindowsPath(PROGRAMS) / "CRM" / "WWWRoot" / "eware.dll")
        == "eware.dll 7.3"
    )
    # The registry: deleted before the import, so what the upgrade added does not survive.
    agent.model.registry[r"hklm\software\eware\config\/crm"]["AddedBy2017"] = "Y"
    res = await agent.ok("x4", "restore_registry", {"source": "registry/r1"})
    assert res["commands"][:2] == [
        r"reg.exe delete HKLM\SOFTWARE\eWare\Config\/CRM /f /reg:32",
        r"reg.exe import D:\CRMBackups\registry\r1\Config_CRM.reg /reg:32",
    ]
    assert "AddedBy2017" not in agent.model.registry[r"hklm\software\eware\config\/crm"]
    assert (await agent.client.get("/v1/status")).json()["version"] == "7.3"


async def test_backup_into_a_folder_sql_server_cannot_find_fails(agent: Agent) -> None:
    """SQL Server creates no folders: without xp_create_subdir the BACKUP fails (OS error 3)."""
    from node_agent.drivers.windows import tsql

    with pytest.raises(Exception, match="Operating system error 3"):
        await agent.model.execute(
            tsql.backup_database("CRM", r"E:\SQLBackups\nowhere\CRM.bak", "x", timeout=60)
        )


async def test_sessions_need_view_server_state(agent: Agent) -> None:
    agent.model._view_server_state = 0
    rec = await agent.run("v1", "database_sessions")
    assert rec["state"] == "failed" and "VIEW SERVER STATE" in rec["error"]
    agent.model._view_server_state = 1
    res = await agent.ok("v2", "database_sessions")
    assert res["hosts"] == {"CRM1": 11} and res["programs"]["CRM1"] == {"eware.dll": 1, "jTDS": 10}
    rights = await agent.ok("v3", "check_database_rights")
    assert rights["ok"] is True and rights["missing"] == []


async def test_the_redirect_restore_allows_the_backup_eware_dll_in_iis(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    app = create_app(settings(tmp_path, tokens["agent"], windows_restore_by="redirect"), background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://a",
            headers={"Authorization": f"Bearer {tokens['agent']}"},
        ) as client:
            a = Agent(client, app.state.driver, app)
            await a.ok("p1", "backup_program_files")
            await a.ok("i1", "run_installer", UPGRADE)  # eware.dll, Tomcat's web apps, Services: 2017 R1
            webapps = PureWindowsPath(PROGRAMS) / "CRM" / "tomcat" / "webapps"
            a.model.put(webapps / "added-by-2017.war", "new")
            for i, action in enumerate(("stop_web", "stop_tomcat")):
                await a.ok(f"s{i}", action)
            await a.ok("s3", "stop_service", {"service": "indexer"})
            res = await a.ok("x1", "restore_program_files", {"source": "program_files/p1"})
            dll = rf"{PROGRAMS}\CRM_backup\WWWRoot\eware.dll"
            assert res["path"] == "CRM_backup"
            # The guide redirects the website only: Tomcat (run from CRM\tomcat) and the services
            # (run from Services) are put back as well.
            assert res["tomcat_webapps"] == "CRM/tomcat/webapps" and res["services_folder"] == "Services"
            assert (
                rf'robocopy D:\CRMBackups\program_files\p1\CRM\tomcat\webapps "{webapps}" /MIR /COPY:DATSO '
                "/DCOPY:DAT /R:2 /W:5 /NP /NFL /NDL"
            ) in res["commands"]
            assert await a.model.read_text(webapps / "sdata.war") == "sdata 7.3"
            assert not await a.model.exists(webapps / "added-by-2017.war")
            services = PureWindowsPath(PROGRAMS) / "Services"
            assert await a.model.read_text(services / "crmindexerservice.exe") == "crmindexerservice.exe 7.3"
            assert (
                r"C:\Windows\System32\inetsrv\appcmd.exe set config /section:system.webServer/security/isapiCgiRestriction "  # noqa: E501
                f"\"/+[path='{dll}',allowed='True',description='Sage CRM CRM_backup']\" /commit:apphost"
            ) in res["commands"]
            assert dll in a.model.isapi and a.model.physical_path == rf"{PROGRAMS}\CRM_backup\WWWRoot"
            res = await a.ok("x2", "redirect_website", {"path": "CRM_backup"})
            assert sum("isapiCgiRestriction /+" in c for c in res["commands"]) == 0  # listed already


async def test_warm_up_logs_on_as_sage_crm_does_and_logs_off(agent: Agent) -> None:
    res = await agent.ok("w1", "warmup_logon")
    assert res["logged_on"] is True and res["logged_off"] == 1
    assert res["commands"][0] == "http: GET http://localhost/crm/eware.dll/go"
    assert res["commands"][1].endswith("with EWARE_USERID=Admin, PASSWORD=***")
    assert agent.model.seats == {}  # no licence seat left taken
    assert "Warm-Up-Pw7" not in str(res)


async def test_the_license_check_says_what_it_checked(agent: Agent) -> None:
    res = await agent.ok("k1", "check_license", {"license_key": KEY})
    assert res["checked"] == "format only" and res["valid_for"] is None and "format only" in res["message"]
    rec = await agent.run("k2", "check_license", {"license_key": "short"})
    assert rec["state"] == "failed"


async def test_the_manual_installer_waits_for_an_operator(tmp_path: Path, tokens: dict[str, str]) -> None:
    app = create_app(settings(tmp_path, tokens["agent"], windows_installer="manual"), background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://a",
            headers={"Authorization": f"Bearer {tokens['agent']}"},
        ) as client:
            a = Agent(client, app.state.driver, app)
            r = await client.post(
                "/v1/operations", json={"op_id": "m1", "action": "run_installer", "params": UPGRADE}
            )
            assert r.status_code == 202
            for _ in range(200):
                rec = (await client.get("/v1/operations/m1")).json()
                if rec["awaiting"] == "operator":
                    break
                await asyncio.sleep(0.01)
            assert rec["awaiting"] == "operator" and rec["state"] == "running"
            # The guide's wizard pages and the choice on each, in the record and its log.
            choices = rec["choices"]
            assert any("'Upgrade Previous Version of CRM'" in c for c in choices), choices
            assert any("sql01, port 1433, SQL Server user crmsql" in c for c in choices)
            assert any("'Backup is not Required'" in c for c in choices)  # the step's backup: false
            assert any("do not register" in c for c in choices) and "confirm" in choices[-1]
            assert any(line.startswith("awaiting operator: ") for line in rec["log_tail"])
            assert (await client.post("/v1/operations/nope/confirm", json={})).status_code == 404
            # The person runs the wizard (the model plays it), then confirms.
            a.model._install("upgrade", "2017 R1")
            r = await client.post("/v1/operations/m1/confirm", json={"note": "ran it, backup to E:"})
            assert r.status_code == 200
            await app.state.operations.wait("m1")
            rec = (await client.get("/v1/operations/m1")).json()
            assert rec["state"] == "succeeded" and rec["awaiting"] is None, rec["error"]
            assert rec["choices"] == []
            assert rec["result"]["version"] == "2017 R1" and rec["result"]["installer"] == "manual"
            again = await client.post("/v1/operations/m1/confirm", json={})
            assert again.status_code == 409


async def test_read_only_runs_only_what_changes_nothing(tmp_path: Path, tokens: dict[str, str]) -> None:
    from node_agent.drivers.windows import tsql
    from node_agent.runner import CommandResult, RecordingRunner

    s = settings(tmp_path, tokens["agent"]).model_copy(
        update={
            "dry_run": False,
            "read_only": True,
            "backup_root": r"D:\B",
            "windows_sql_backup_dir": r"E:\S",
        }
    )
    runner = RecordingRunner({"sc": CommandResult(0, "SERVICE_NAME: W3SVC\n  STATE : 4  RUNNING")})
    sql = tsql.RecordingSql(answers={"login_rights": [("crmsql", 1, 1, 1, 1, 0)]})
    driver = WindowsDriver(s, runner=runner, sql=sql, poll=0)
    app = create_app(s, driver=driver, runner=runner, background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://a",
            headers={"Authorization": f"Bearer {tokens['agent']}"},
        ) as client:
            a = Agent(client, driver, app)
            assert (await client.get("/v1/status")).status_code == 200
            rights = await a.ok("r1", "check_database_rights")
            assert (
                "sysadmin (xp_create_subdir), or a UNC CRMCLUSTER_WINDOWS_SQL_BACKUP_DIR" in rights["missing"]
            )
            rec = await a.run("w1", "stop_web")
            assert (
                rec["state"] == "failed"
                and "read-only mode" in rec["error"]
                and "iisreset /stop" in rec["error"]
            )
            rec = await a.run("b1", "backup_database")
            assert rec["state"] == "failed" and "xp_create_subdir" in rec["error"]
    ran = [RecordingRunner.program(c) for c in runner.calls]
    assert "iisreset" not in ran and set(ran) <= {"sc", "reg", "appcmd"}
    assert [c.name for c in sql.calls] == ["login_rights"]


def test_every_statement_the_driver_can_send_is_t_sql() -> None:
    """Parsed by sqlfluff's tsql dialect (extended with BACKUP and RESTORE VERIFYONLY)."""
    from node_agent.drivers.windows import tsql
    from tests.agent.tsql_parser import inline, parse

    disk = r"E:\SQLBackups\database\b1\CRM.bak"
    statements = [
        tsql.create_subdir(r"E:\SQLBackups\database\b1"),
        tsql.backup_database("CRM", disk, "crmcluster b1", timeout=60),
        tsql.verify_backup(disk, timeout=60),
        tsql.backup_record("CRM", disk),
        tsql.single_user("CRM"),
        tsql.restore_database("CRM", disk, timeout=60),
        tsql.multi_user("CRM"),
        tsql.login_rights("CRM"),
        tsql.view_server_state(),
        tsql.sessions("CRM"),
        tsql.locks("CRM"),
        tsql.DTA_OBJECTS,
        tsql.ENABLED_TRIGGERS,
        tsql.VIEWS,
        tsql.TCP_ENABLED,
        tsql.COLLATION,
        tsql.SQL_MEMORY,
        tsql.trigger("DISABLE", "dbo", "Company", "trg"),
        tsql.trigger("ENABLE", "dbo", "Company", "trg"),
    ]
    kinds = {s.name: parse(inline(s)) for s in statements}
    # Names from settings are quoted identifiers (sqlfluff's lexer does not know ']]', T-SQL does).
    assert (
        tsql.trigger("DISABLE", "dbo", "Comp]any", "t; DROP").text
        == "DISABLE TRIGGER [dbo].[t; DROP] ON [dbo].[Comp]]any]"
    )
    assert kinds["backup_database"] == "backup_database_statement"
    assert kinds["restore_database"] == "restore_database_statement"
    assert kinds["verify_backup"] == "restore_verifyonly_statement"
    assert kinds["single_user"] == kinds["multi_user"] == "alter_database_statement"
    assert kinds["sessions"] == "select_statement"
    assert all(s.timeout > 0 for s in statements)  # every statement has a query time-out
    # And the parser is not lenient: a misspelt option is refused.
    with pytest.raises(AssertionError):
        parse("BACKUP DATABASE [CRM] TO DISK = 'x' WITH COPY_ONLYY")
    with pytest.raises(AssertionError):
        parse("RESTORE DATABASE [CRM] FROM DISK = 'x' WITH REPLAC")


async def test_local_files_on_this_machine(tmp_path: Path) -> None:
    from node_agent.drivers.windows.host import LocalFiles

    files = LocalFiles()
    root = PureWindowsPath(str(tmp_path))
    await files.write_text(root / "a" / "b.txt", "x")
    assert await files.exists(root / "a" / "b.txt") and await files.is_dir(root / "a")
    await files.rename(root / "a", root / "c")
    assert (tmp_path / "c" / "b.txt").read_text() == "x"
    m = await files.manifest(root / "c")
    assert m["files"] == 1 and m["bytes"] == 1
    assert await files.listdir(root / "c") == ["b.txt"]
    info = await files.info(root / "c" / "b.txt")
    assert info is not None and info.size == 1


@pytest.mark.slow
def test_crmcluster_agent_dry_run_process_over_http(tmp_path: Path, tokens: dict[str, str]) -> None:
    """``crmcluster agent --driver windows --dry-run`` on this machine, driven over a real socket."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_")},
        "CRMCLUSTER_AGENT_TOKEN": tokens["agent"],
        "CRMCLUSTER_CRM_DB_URL": DB_URL,
        "CRMCLUSTER_SANDBOX_ROLES": "database",
        "CRMCLUSTER_WARMUP_PASSWORD": "Warm-Up-Pw7",
    }
    argv = [
        sys.executable,
        "-m",
        "crmcluster",
        "agent",
        "--name",
        "crm1",
        "--driver",
        "windows",
        "--dry-run",
        "--data-dir",
        str(tmp_path / "crm1"),
        "--port",
        str(port),
    ]
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {tokens['agent']}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.1)
        with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
            assert c.get("/v1/status").json()["driver"] == "windows (dry run)"
            for op, action, params in [("o1", "stop_web", {}), ("o2", "run_installer", UPGRADE)]:
                assert (
                    c.post(
                        "/v1/operations", json={"op_id": op, "action": action, "params": params}
                    ).status_code
                    == 202
                )
                for _ in range(300):
                    rec = c.get(f"/v1/operations/{op}").json()
                    if rec["state"] not in ("pending", "running"):
                        break
                    time.sleep(0.05)
                assert rec["state"] == "succeeded", rec
            assert c.get("/v1/operations/o1").json()["result"]["commands"] == [
                "iisreset /stop",
                "sc.exe query W3SVC",
            ]
            commands = rec["result"]["commands"]
            assert any(cmd.startswith(r"C:\CRMSetup\Setup.exe /s /f1") for cmd in commands)
            assert KEY not in str(rec) and "S3cret-Pw9" not in str(rec)
    finally:
        proc.terminate()
        proc.wait(20)
