"""The windows driver's manual uninstall on Linux: the guide's commands, recorded as argument lists
(a modelled server answers sc.exe, reg.exe and appcmd), and each step safe to run again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from config.settings import AgentSettings
from node_agent.app import create_app
from node_agent.drivers.windows import WindowsDriver, tsql
from node_agent.operations import OperationManager
from node_agent.protocol import UNINSTALL_ACTIONS, Action, OperationRecord, parse_params
from node_agent.runner import CommandResult, RecordingRunner
from tests.agent.test_windows_driver import DB_URL


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


APPCMD = "C:\\Windows\\System32\\inetsrv\\appcmd.exe"
CONFIG = "HKLM\\SOFTWARE\\eWare\\Config\\/CRM"
MAPPINGS = "HKLM\\SOFTWARE\\eWare\\Mappings\\/CRM"


class FakeServer(FakeServices):
    """sc.exe plus the services' own ``/U``, procrun's ``//DS//``, reg.exe and appcmd over dicts."""

    def __init__(self, states: dict[str, str], root: Path) -> None:
        super().__init__(states)
        self.keys = {CONFIG, MAPPINGS}
        self.apps = {"Default Web Site/CRM"}
        self.root = root

    def service_exe(self, argv: list[str]) -> CommandResult:
        exe = RecordingRunner.program(argv)
        if argv[1:] == ["/U"]:
            name = {
                "crmindexerservice": "CRMIndexerService",
                "crmescalationservice": "CRMEscalationService",
                "crmemailmanagerservice": "CRMEmailManagerService",
                "crmintegrationservice": "CRMIntegrationService",
            }[exe]
            self.states.pop(name, None)
        elif exe == "tomcat7" and argv[1].startswith("//DS//"):
            if self.states.get(argv[1][6:]) == "RUNNING":
                return CommandResult(1, "Failed to delete service: the service is running")
            self.states.pop(argv[1][6:], None)
        return CommandResult(0, "")

    def reg(self, argv: list[str]) -> CommandResult:
        verb, key = argv[1], argv[2]
        if verb == "query":
            if key == "HKLM\\SOFTWARE\\eWare\\Config":
                subs = [
                    k.replace("HKLM", "HKEY_LOCAL_MACHINE") for k in self.keys if k.startswith(key + "\\")
                ]
                return CommandResult(0, "\n".join(subs))
            if key in self.keys:
                return CommandResult(0, f"{key}\n    Version    REG_SZ    7.3")
            return CommandResult(
                1, "ERROR: The system was unable to find the specified registry key or value."
            )
        if verb == "delete":
            if key not in self.keys:
                return CommandResult(
                    1, "ERROR: The system was unable to find the specified registry key or value."
                )
            self.keys.discard(key)
        return CommandResult(0, "The operation completed successfully.")

    def appcmd(self, argv: list[str]) -> CommandResult:
        if argv[1:3] == ["list", "app"]:
            if argv[3] in self.apps:
                return CommandResult(0, f'APP "{argv[3]}" (applicationPool:DefaultAppPool)')
            return CommandResult(1, f'ERROR ( message:Cannot find APP object with identifier "{argv[3]}". )')
        if argv[1:3] == ["delete", "app"]:
            self.apps.discard(argv[3])
            return CommandResult(0, f'APP object "{argv[3]}" deleted')
        return CommandResult(0, 'WP "5120" (applicationPool:DefaultAppPool)')

    def net(self, argv: list[str]) -> CommandResult:
        if argv[1:] == ["stop", "iisadmin", "/y"]:
            self.states["W3SVC"] = "STOPPED"
        elif argv[1:] == ["start", "w3svc"]:
            self.states["W3SVC"] = "RUNNING"
        return CommandResult(0, "")


@dataclass
class Win:
    driver: WindowsDriver
    runner: RecordingRunner
    ops: OperationManager
    root: Path
    server: FakeServer

    async def run(self, op_id: str, action: str) -> OperationRecord:
        self.ops.submit(op_id, Action(action), parse_params(action, {}))
        return await self.ops.wait(op_id)

    def commands(self) -> list[list[str]]:
        return [c for c in self.runner.calls if not (c[0] == "sc.exe" and c[1] in ("query", "queryex"))]


@pytest.fixture
async def win(tmp_path: Path, tokens: dict[str, str]) -> AsyncIterator[Win]:
    root = tmp_path / "Sage CRM"
    (root / "CRM" / "WWWRoot").mkdir(parents=True)
    (root / "CRM" / "WWWRoot" / "eware.dll").write_text("dll")
    (root / "CRM" / "tomcat" / "bin").mkdir(parents=True)
    (root / "CRM_backup" / "WWWRoot").mkdir(parents=True)
    settings = AgentSettings(
        _env_file=None,
        agent_token=tokens["agent"],
        name="crm4",
        driver="windows",
        data_dir=tmp_path / "data",
        crm_db_url=DB_URL,
        backup_root=str(tmp_path / "backups"),
        windows_programs_root=str(root),
    )
    server = FakeServer(
        {
            "W3SVC": "RUNNING",
            "CRMTomcat7": "RUNNING",
            "CRMIndexerService": "RUNNING",
            "CRMIntegrationService": "STOPPED",
        },
        root,
    )
    script = {"sc": server, "reg": server.reg, "appcmd": server.appcmd, "net": server.net}
    for exe in (
        "crmindexerservice",
        "crmescalationservice",
        "crmemailmanagerservice",
        "crmintegrationservice",
        "tomcat7",
    ):
        script[exe] = server.service_exe
    runner = RecordingRunner(script)  # type: ignore[arg-type]
    driver = WindowsDriver(settings, runner=runner, sql=tsql.RecordingSql(), poll=0)
    app = create_app(settings, driver=driver, runner=runner, background=False)
    async with app.router.lifespan_context(app):
        yield Win(driver, runner, app.state.operations, root, server)


async def test_the_guides_manual_uninstall_as_commands(win: Win) -> None:
    for i, action in enumerate(UNINSTALL_ACTIONS):
        rec = await win.run(f"u{i}", action.value)
        assert rec.state == "succeeded", (action, rec.error, rec.log_tail)
    services = str(win.root / "Services")
    dll = str(win.root / "CRM" / "WWWRoot" / "eware.dll")
    assert win.commands() == [
        # 1: CRM services (stopped first when running) and the Tomcat service
        ["sc.exe", "stop", "CRMIndexerService"],
        [f"{services}/crmindexerservice.exe", "/U"],
        [f"{services}/crmintegrationservice.exe", "/U"],
        ["sc.exe", "stop", "CRMTomcat7"],
        [str(win.root / "CRM" / "tomcat" / "bin" / "tomcat7.exe"), "//DS//CRMTomcat7"],
        # 2: eware.dll, 32-bit regsvr32
        ["C:\\Windows\\SysWOW64\\regsvr32.exe", "/u", "/s", dll],
        # 3: the IIS application
        [APPCMD, "list", "app", "Default Web Site/CRM"],
        [APPCMD, "delete", "app", "Default Web Site/CRM"],
        # 5-6: the install's Config and Mappings keys, 32-bit view
        ["reg.exe", "query", CONFIG, "/reg:32"],
        ["reg.exe", "delete", CONFIG, "/f", "/reg:32"],
        ["reg.exe", "query", MAPPINGS, "/reg:32"],
        ["reg.exe", "delete", MAPPINGS, "/f", "/reg:32"],
        # 7: IIS stopped, folders deleted, eware.cpl only once no install is left, IIS back
        ["net", "stop", "iisadmin", "/y"],
        ["reg.exe", "query", "HKLM\\SOFTWARE\\eWare\\Config", "/reg:32"],
        ["net", "start", "w3svc"],
    ]
    assert not (win.root / "CRM").exists() and not (win.root / "CRM_backup").exists()
    assert win.server.keys == set() and win.server.apps == set()
    assert set(win.server.states) == {"W3SVC"}
    # no command touches the database: no SQL at all
    assert win.driver.host.sql.calls == []  # type: ignore[attr-defined]


async def test_every_step_run_again_changes_nothing(win: Win) -> None:
    for i, action in enumerate(UNINSTALL_ACTIONS):
        assert (await win.run(f"a{i}", action.value)).state == "succeeded"
    first = len(win.runner.calls)
    for i, action in enumerate(UNINSTALL_ACTIONS):
        rec = await win.run(f"b{i}", action.value)
        assert rec.state == "succeeded", (action, rec.error)
    again = [c for c in win.runner.calls[first:] if c[0] != "sc.exe"]
    assert not any(c[1] in ("delete", "/U") or c[1].startswith("//DS//") for c in again)
    assert ["net", "stop", "iisadmin", "/y"] in again  # step 7 still stops IIS around an empty delete


async def test_the_folder_is_not_deleted_while_tomcat_runs_from_it(win: Win) -> None:
    rec = await win.run("t1", "delete_install_folder")
    assert rec.state == "failed" and "remove the Tomcat service first" in (rec.error or "")
    assert (win.root / "CRM").is_dir()
