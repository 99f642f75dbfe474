"""The windows driver on Linux: the exact argument lists and T-SQL it would run, recorded.

Nothing reaches a shell: every command is a list; request values end up as single arguments or
bound SQL parameters, never inside a statement's text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from config.settings import AgentSettings
from node_agent.app import create_app
from node_agent.drivers import windows_sql as tsql
from node_agent.drivers.windows import WindowsDriver
from node_agent.operations import OperationManager
from node_agent.protocol import OperationRecord
from node_agent.runner import CommandResult, RecordingRunner

DB_URL = "mssql+aioodbc://crmsql:s3cret-Pw@sql01:1433/CRM?driver=ODBC+Driver+18+for+SQL+Server"
SQL_DIR = r"E:\SQLBackups"


class FakeServices:
    """sc.exe over a dict of service states."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states

    def __call__(self, argv: list[str]) -> CommandResult:
        verb, name = argv[1], argv[2]
        if verb in ("query", "queryex"):
            if name not in self.states:
                return CommandResult(1060, "[SC] EnumQueryServicesStatus:OpenService FAILED 1060")
            code = {"RUNNING": 4, "STOPPED": 1}[self.states[name]]
            return CommandResult(
                0,
                f"SERVICE_NAME: {name}\n        STATE              : {code}  {self.states[name]}\n"
                "        PID                : 4242",
            )
        if verb == "stop":
            if self.states.get(name) == "STOPPED":
                return CommandResult(
                    1062, "[SC] ControlService FAILED 1062: The service has not been started."
                )
            self.states[name] = "STOPPED"
        elif verb == "start":
            self.states[name] = "RUNNING"
        elif verb == "create":
            self.states[name] = "STOPPED"
        elif verb == "delete":
            self.states.pop(name, None)
        return CommandResult(0, "[SC] OK")


@dataclass
class Win:
    driver: WindowsDriver
    runner: RecordingRunner
    sql: tsql.RecordingSql
    ops: OperationManager
    root: Path
    backups: Path

    async def run(self, op_id: str, action: str, params: dict[str, object] | None = None) -> OperationRecord:
        from node_agent.protocol import Action, parse_params

        self.ops.submit(op_id, Action(action), parse_params(action, params or {}))
        return await self.ops.wait(op_id)

    def commands(self, program: str | None = None) -> list[list[str]]:
        calls = [c for c in self.runner.calls if not (c[0] == "sc.exe" and c[1] in ("query", "queryex"))]
        return [c for c in calls if program is None or RecordingRunner.program(c) == program]


@pytest.fixture
async def win(tmp_path: Path, tokens: dict[str, str]) -> AsyncIterator[Win]:
    root = tmp_path / "Sage CRM"
    (root / "CRM" / "WWWRoot").mkdir(parents=True)
    (root / "CRM" / "WWWRoot" / "eware.dll").write_text("dll")
    (root / "CRM" / "tomcat" / "webapps").mkdir(parents=True)
    (root / "CRM" / "tomcat" / "webapps" / "CRMExchangeSyncEngine.war").write_text("war")
    settings = AgentSettings(
        _env_file=None,
        agent_token=tokens["agent"],
        name="crm1",
        driver="windows",
        data_dir=tmp_path / "data",
        crm_db_url=DB_URL,
        backup_root=str(tmp_path / "backups"),
        windows_programs_root=str(root),
        windows_sql_backup_dir=SQL_DIR,
        sandbox_roles="database",
    )
    services = FakeServices({"W3SVC": "RUNNING", "CRMTomcat7": "RUNNING", "CRMIndexerService": "RUNNING"})
    runner = RecordingRunner(
        {
            "sc": services,
            "reg": CommandResult(0, "    Version    REG_SZ    7.3\nThe operation completed successfully."),
            "appcmd": CommandResult(0, 'WP "5120" (applicationPool:DefaultAppPool)'),
        }
    )
    # msdb's record of a backup: its size, page checksums on, when it finished.
    sql = tsql.RecordingSql({"msdb.dbo.backupset": [(7340032, True, datetime(2024, 5, 1, 12, 0))]})
    driver = WindowsDriver(settings, runner=runner, sql=sql, poll=0)
    app = create_app(settings, driver=driver, runner=runner, background=False)
    async with app.router.lifespan_context(app):
        yield Win(driver, runner, sql, app.state.operations, root, tmp_path / "backups")


async def _ok(win: Win, op: str, action: str, params: dict[str, object] | None = None) -> dict[str, object]:
    rec = await win.run(op, action, params)
    assert rec.state == "succeeded", (rec.error, rec.log_tail)
    assert rec.result is not None
    return rec.result


async def test_iis_tomcat_and_services_are_the_real_commands(win: Win) -> None:
    await _ok(win, "1", "stop_web")
    await _ok(win, "2", "start_web")
    await _ok(win, "3", "stop_tomcat")
    await _ok(win, "4", "start_tomcat")
    await _ok(win, "5", "stop_service", {"service": "indexer"})
    await _ok(win, "6", "stop_service", {"service": "indexer"})  # already stopped: fine (1062)
    await _ok(win, "7", "install_service", {"service": "escalation"})
    await _ok(win, "8", "uninstall_service", {"service": "indexer"})
    assert win.commands() == [
        ["iisreset", "/stop"],
        ["iisreset", "/start"],
        ["sc.exe", "stop", "CRMTomcat7"],
        ["sc.exe", "start", "CRMTomcat7"],
        ["sc.exe", "stop", "CRMIndexerService"],
        ["sc.exe", "stop", "CRMIndexerService"],
        [
            "sc.exe",
            "create",
            "CRMEscalationService",
            "binPath=",
            str(win.root / "Services" / "crmescalationservice.exe"),
            "start=",
            "auto",
        ],
        ["sc.exe", "stop", "CRMIndexerService"],
        ["sc.exe", "delete", "CRMIndexerService"],
    ]


async def test_registry_dll_and_website(win: Win) -> None:
    res = await _ok(win, "r1", "backup_registry", {"destination": "pre/registry"})
    dest = win.backups / "pre" / "registry"
    assert res["path"] == "pre/registry"
    assert win.commands("reg") == [
        [
            "reg.exe",
            "export",
            "HKLM\\SOFTWARE\\eWare\\Config\\/CRM",
            str(dest / "Config_CRM.reg"),
            "/y",
            "/reg:32",
        ],
        [
            "reg.exe",
            "export",
            "HKLM\\SOFTWARE\\eWare\\Mappings\\/CRM",
            str(dest / "Mappings_CRM.reg"),
            "/y",
            "/reg:32",
        ],
    ]
    for f in ("Config_CRM.reg", "Mappings_CRM.reg"):  # reg.exe would have written them
        (dest / f).write_text("Windows Registry Editor Version 5.00\n")
    win.runner.calls.clear()
    await _ok(win, "r2", "restore_registry", {"source": "pre/registry"})
    assert win.commands("reg") == [
        ["reg.exe", "import", str(dest / "Config_CRM.reg"), "/reg:32"],
        ["reg.exe", "import", str(dest / "Mappings_CRM.reg"), "/reg:32"],
    ]
    win.runner.calls.clear()
    await _ok(win, "d1", "register_dll")
    await _ok(win, "w1", "redirect_website", {"path": "CRM_backup"})
    appcmd = win.driver.settings.windows_appcmd
    assert win.commands() == [
        ["regsvr32", "/s", str(win.root / "CRM" / "WWWRoot" / "eware.dll")],
        [
            appcmd,
            "set",
            "vdir",
            "/vdir.name:Default Web Site/CRM/",
            f"/physicalPath:{win.root / 'CRM_backup'}",
        ],
    ]


async def test_program_files_backup_and_restore_redirects_the_website(win: Win) -> None:
    res = await _ok(win, "p1", "backup_program_files")
    assert res["path"] == "program_files/p1" and res["files"] == 2
    win.runner.calls.clear()
    res = await _ok(win, "p2", "restore_program_files", {"source": "program_files/p1"})
    assert (win.root / "CRM_backup" / "WWWRoot" / "eware.dll").read_text() == "dll"
    assert win.commands("appcmd") == [
        [
            win.driver.settings.windows_appcmd,
            "set",
            "vdir",
            "/vdir.name:Default Web Site/CRM/",
            f"/physicalPath:{win.root / 'CRM_backup' / 'WWWRoot'}",
        ]
    ]


async def test_database_backup_and_restore_sql(win: Win) -> None:
    backup = await _ok(win, "db1", "backup_database")
    disk = SQL_DIR + r"\database\db1\CRM.bak"
    assert win.sql.calls == [
        (
            "master",
            "BACKUP DATABASE [CRM] TO DISK = ? WITH CHECKSUM, INIT, FORMAT, NAME = ?",
            (disk, "crmcluster db1"),
        ),
        ("master", "RESTORE VERIFYONLY FROM DISK = ? WITH CHECKSUM", (disk,)),
        ("msdb", tsql.BACKUP_RECORD_SQL, ("CRM", disk)),
    ]
    assert backup["bytes"] == 7340032 and backup["verified"] is True and backup["path"] == "database/db1"
    # No record in msdb, or one without page checksums: the backup is not reported as made.
    win.sql.answers = {"msdb.dbo.backupset": [(7340032, False, datetime(2024, 5, 1, 12, 0))]}
    rec = await win.run("db1b", "backup_database")
    assert rec.state == "failed" and "no page checksums" in (rec.error or "")
    win.sql.answers = {}
    rec = await win.run("db1c", "backup_database")
    assert rec.state == "failed" and "msdb has no record" in (rec.error or "")
    win.sql.calls.clear()
    (win.backups / "database" / "db1").mkdir(parents=True, exist_ok=True)
    await _ok(win, "db2", "restore_database", {"source": "database/db1"})
    assert [c[1] for c in win.sql.calls] == [
        "RESTORE VERIFYONLY FROM DISK = ? WITH CHECKSUM",
        "ALTER DATABASE [CRM] SET SINGLE_USER WITH ROLLBACK IMMEDIATE",
        "RESTORE DATABASE [CRM] FROM DISK = ? WITH REPLACE, CHECKSUM",
        "ALTER DATABASE [CRM] SET MULTI_USER",
    ]
    assert all(c[0] == "master" for c in win.sql.calls)
    # A failed RESTORE still gives the database back to everyone.
    win.sql.calls.clear()
    win.sql.fail_on = "RESTORE DATABASE"
    rec = await win.run("db3", "restore_database", {"source": "database/db1"})
    assert rec.state == "failed"
    assert win.sql.calls[-1][1] == "ALTER DATABASE [CRM] SET MULTI_USER"


async def test_request_values_never_reach_statement_text_or_split_arguments(win: Win, tmp_path: Path) -> None:
    evil = "x'; DROP DATABASE CRM; --"
    await _ok(win, "e1", "backup_database", {"destination": evil})
    sql, params = win.sql.calls[0][1], win.sql.calls[0][2]
    assert "DROP" not in sql and params[0] == SQL_DIR + "\\" + evil + r"\CRM.bak"
    # Names from settings or the database are quoted identifiers.
    assert tsql.quote_ident("CR]M") == "[CR]]M]"
    assert (
        tsql.trigger_sql("DISABLE", "dbo", "Comp]any", "t; DROP")
        == "DISABLE TRIGGER [dbo].[t; DROP] ON [dbo].[Comp]]any]"
    )
    win.driver.settings.__dict__["crm_db_url"] = DB_URL.replace("/CRM?", "/CRM;DROP?")
    rec = await win.run("e2", "backup_database")
    assert rec.state == "failed" and "no usable database" in (rec.error or "")


async def test_sessions_dta_objects_and_triggers(win: Win) -> None:
    win.sql.answers = {
        "dm_exec_sessions": [("CRM2", "eware", 1), ("CRM2", "JDBC", 10), ("SQL01", "SSMS", 1)],
        "sys.stats": [("dbo", "Company", "_dta_index_Company_5_1", "index")],
        "sys.triggers": [("dbo", "Company", "trg]Audit")],
    }
    res = await _ok(win, "s1", "database_sessions")
    assert res["hosts"] == {"CRM2": 11, "SQL01": 1} and res["total"] == 12
    assert win.sql.calls[-1][1] == tsql.SESSIONS_SQL and win.sql.calls[-1][2] == ("CRM",)
    res = await _ok(win, "s2", "list_dta_objects")
    assert res["objects"] == [
        {"schema": "dbo", "table": "Company", "name": "_dta_index_Company_5_1", "kind": "index"}
    ]
    assert "sys.indexes" in win.sql.calls[-1][1] and "sys.stats" in win.sql.calls[-1][1]
    win.sql.calls.clear()
    await _ok(win, "t1", "disable_triggers")
    assert win.sql.calls[-1][1] == "DISABLE TRIGGER [dbo].[trg]]Audit] ON [dbo].[Company]"
    win.sql.calls.clear()
    await _ok(win, "t2", "enable_triggers")
    assert [c[1] for c in win.sql.calls] == ["ENABLE TRIGGER [dbo].[trg]]Audit] ON [dbo].[Company]"]


async def test_installer_from_the_command_template(win: Win) -> None:
    key = "ABCDE-12345 /register=Y & calc.exe"
    rec = await win.run(
        "i1",
        "run_installer",
        {
            "mode": "upgrade",
            "version": "2017 R1",
            "license_key": key,
            "database": {"server": "sql01", "user": "crmsql", "password": "Pa55;w0rd"},
            "backup": True,
            "backup_location": "installer",
            "register": True,
        },
    )
    assert rec.state == "succeeded", rec.error
    setup = win.commands("setup")
    assert setup == [
        [
            r"C:\CRMSetup\Setup.exe",
            "/s",
            "/mode=upgrade",
            "/install=CRM",
            "/version=2017 R1",
            f"/license={key}",
            "/dbserver=sql01",
            "/dbport=1433",
            "/dbuser=crmsql",
            "/dbpassword=Pa55;w0rd",
            "/backup=Y",
            f"/backuplocation={win.backups / 'installer'}",
            "/register=Y",
        ]
    ]
    # The record and the log tail never show the key or the password.
    text = rec.model_dump_json()
    assert key not in text and "Pa55;w0rd" not in text


async def test_cancel_terminates_the_running_installer(win: Win) -> None:
    win.runner.hang.add("setup")
    from node_agent.protocol import Action, parse_params

    params = parse_params(
        "run_installer", {"mode": "add_node", "version": "2017 R1", "license_key": "KEY-12345678"}
    )
    win.ops.submit("c1", Action.RUN_INSTALLER, params)
    for _ in range(100):
        if win.runner.calls and RecordingRunner.program(win.runner.calls[-1]) == "setup":
            break
        await asyncio.sleep(0.01)
    assert win.ops.get("c1").state == "running"
    win.ops.cancel("c1")
    rec = await win.ops.wait("c1")
    assert rec.state == "cancelled"
    assert RecordingRunner.program(win.runner.cancelled[0]) == "setup"


async def test_status_and_iis_start_from_sc_and_appcmd(win: Win) -> None:
    status = await win.driver.status()
    assert status.version == "7.3" and status.web == "running" and status.tomcat == "running"
    assert status.services["indexer"] == "running" and status.services["escalation"] == "not_installed"
    assert status.replication_engine is True
    first = await win.driver.iis_started_at()
    assert first is not None and await win.driver.iis_started_at() == first
    win.runner.script["appcmd"] = CommandResult(0, 'WP "7777" (applicationPool:DefaultAppPool)')  # a recycle
    await asyncio.sleep(0.001)
    assert (await win.driver.iis_started_at()) != first


async def test_views_replication_engine_metadata_and_the_rest(win: Win) -> None:
    win.sql.answers = {"sys.views": [("dbo", "vCompany", "CREATE VIEW vCompany AS SELECT 1")]}
    res = await _ok(win, "v1", "backup_views")
    assert res["views"] == ["dbo.vCompany"]
    assert "CREATE VIEW vCompany" in (win.backups / "views" / "v1" / "views.sql").read_text()

    win.runner.calls.clear()
    war = win.root / "CRM" / "tomcat" / "webapps" / "CRMExchangeSyncEngine.war"
    res = await _ok(win, "re1", "remove_replication_engine")
    assert res["removed"] is True and not war.exists()
    assert win.commands() == [["sc.exe", "stop", "CRMTomcat7"], ["sc.exe", "start", "CRMTomcat7"]]
    await _ok(win, "re2", "install_replication_engine")
    assert war.read_text() == "war"

    win.runner.calls.clear()
    await _ok(win, "m1", "reload_metadata")
    assert win.commands()[0] == [
        win.driver.settings.windows_appcmd,
        "recycle",
        "apppool",
        "/apppool.name:DefaultAppPool",
    ]

    rec = await win.run("x1", "disable_exchange_integration")
    assert rec.state == "failed" and "Exchange Integration" in (rec.error or "")
    assert (await _ok(win, "k1", "check_license", {"license_key": "ABCDEFGH-1"}))["valid"] is True
    assert (await win.run("k2", "check_license", {"license_key": "short"})).state == "failed"

    missing = await win.run("l0", "read_upgrade_log")
    assert missing.state == "failed" and "no upgrade log" in (missing.error or "")
    (win.root / "CRM" / "Setup").mkdir()
    (win.root / "CRM" / "Setup" / "upgradelog.html").write_text(
        "<table><tr><td>views.es</td><td>Failed</td></tr></table><p>NB must be fixed: view vX</p>"
    )
    log = await _ok(win, "l1", "read_upgrade_log")
    assert log["failed_scripts"] == ["views.es"] and log["must_fix"] == ["NB must be fixed: view vX"]


async def test_a_missing_program_fails_the_step_in_one_line(tmp_path: Path, tokens: dict[str, str]) -> None:
    from node_agent.runner import SubprocessRunner

    settings = AgentSettings(
        _env_file=None,
        agent_token=tokens["agent"],
        name="crm1",
        driver="windows",
        data_dir=tmp_path,
        windows_programs_root=str(tmp_path),
    )
    runner = SubprocessRunner()
    driver = WindowsDriver(settings, runner=runner, sql=tsql.RecordingSql(), poll=0)
    app = create_app(settings, driver=driver, runner=runner, background=False)
    async with app.router.lifespan_context(app):
        ops: OperationManager = app.state.operations
        from node_agent.protocol import Action, NoParams

        ops.submit("n1", Action.STOP_WEB, NoParams())
        rec = await ops.wait("n1")
        assert rec.state == "failed" and rec.error == "cannot run iisreset: No such file or directory"
        status = await driver.status()  # sc.exe missing too: states read as unknown, no error
        assert status.web == "unknown"
