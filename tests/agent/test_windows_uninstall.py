"""The windows driver's manual uninstall on Linux: the guide's commands, recorded as argument lists
(a fake server answers sc.exe, reg.exe, appcmd and iisreset over this machine's files), each step
safe to run again; and the whole removal of a server walked through by a dry-run agent over HTTP
(the modelled server answers the uninstall's own programs: the services' ``/U``, procrun's
``//DS//``, ``regsvr32 /u``, ``appcmd delete app``, ``iisreset``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from config.settings import AgentSettings
from node_agent.app import create_app
from node_agent.drivers.windows import WindowsDriver, tsql
from node_agent.drivers.windows.model import ModelledServer
from node_agent.operations import OperationManager
from node_agent.protocol import UNINSTALL_ACTIONS, Action, OperationRecord, parse_params
from node_agent.runner import CommandResult, RecordingRunner
from tests.agent.test_windows_driver import DB_URL
from tests.agent.test_windows_driver import settings as windows_settings


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

    def iisreset(self, argv: list[str]) -> CommandResult:
        self.states["W3SVC"] = "STOPPED" if argv[1:] == ["/stop"] else "RUNNING"
        return CommandResult(
            0, "Internet services successfully " + ("stopped" if argv[1:] == ["/stop"] else "started")
        )


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
    script = {"sc": server, "reg": server.reg, "appcmd": server.appcmd, "iisreset": server.iisreset}
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
    root = PureWindowsPath(str(win.root))  # how the driver names it (\\tmp\\… here)
    services = str(root / "Services")
    dll = str(root / "CRM" / "WWWRoot" / "eware.dll")
    assert win.commands() == [
        # 1: CRM services (stopped first when running) and the Tomcat service
        ["sc.exe", "stop", "CRMIndexerService"],
        [f"{services}\\crmindexerservice.exe", "/U"],
        [f"{services}\\crmintegrationservice.exe", "/U"],
        ["sc.exe", "stop", "CRMTomcat7"],
        [str(root / "CRM" / "tomcat" / "bin" / "tomcat7.exe"), "//DS//CRMTomcat7"],
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
        ["iisreset", "/stop"],
        ["reg.exe", "query", "HKLM\\SOFTWARE\\eWare\\Config", "/reg:32"],
        ["iisreset", "/start"],
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
    assert ["iisreset", "/stop"] in again  # step 7 still stops IIS around an empty delete


async def test_the_folder_is_not_deleted_while_tomcat_runs_from_it(win: Win) -> None:
    rec = await win.run("t1", "delete_install_folder")
    assert rec.state == "failed" and "remove the Tomcat service first" in (rec.error or "")
    assert (win.root / "CRM").is_dir()


# The whole removal of a server, walked through by a dry-run agent over HTTP -------------------------
PROGRAMS = r"C:\Program Files (x86)\Sage\CRM"
APPCMD_EXE = r"C:\Windows\System32\inetsrv\appcmd.exe"


@dataclass
class DryRun:
    client: httpx.AsyncClient
    app: FastAPI

    @property
    def model(self) -> ModelledServer:
        model: ModelledServer = self.app.state.driver.model
        return model

    async def run(self, op_id: str, action: str) -> dict[str, Any]:
        r = await self.client.post("/v1/operations", json={"op_id": op_id, "action": action, "params": {}})
        assert r.status_code == 202, r.text
        await self.app.state.operations.wait(op_id)
        rec: dict[str, Any] = (await self.client.get(f"/v1/operations/{op_id}")).json()
        return rec


@contextlib.asynccontextmanager
async def dry_run_agent(
    tmp_path: Path, token: str, *, read_only: bool = False, **extra: Any
) -> AsyncIterator[DryRun]:
    """A dry-run agent; ``read_only``: the read-only mode on the same modelled server (as on a
    real one, where it may only look)."""
    settings = windows_settings(tmp_path, token, name="crm4", **extra)
    if not read_only:
        app = create_app(settings, background=False)
    else:
        model = ModelledServer.from_settings(settings)
        settings = settings.model_copy(update={"dry_run": False, "read_only": True})
        driver = WindowsDriver(
            settings, runner=model, sql=model, files=model, http=model.transport(), model=model
        )
        app = create_app(settings, driver=driver, runner=model, background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://crm4.agent",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            yield DryRun(client, app)


def _changes(commands: list[str]) -> list[str]:
    """What changed the server: no look (sc query/qc, reg query, appcmd list)."""
    looks = ("sc.exe query", "sc.exe qc", "reg.exe query", f"{APPCMD_EXE} list")
    return [c for c in commands if not c.startswith(looks)]


async def test_a_dry_run_walks_a_whole_server_removal_through(tmp_path: Path, tokens: dict[str, str]) -> None:
    async with dry_run_agent(tmp_path, tokens["agent"], sandbox_roles="indexer,escalation") as a:
        before = (await a.client.get("/v1/status")).json()
        assert before["services"]["indexer"] == "running" and before["version"] == "7.3"
        changed: dict[str, list[str]] = {}
        for i, action in enumerate(UNINSTALL_ACTIONS):
            rec = await a.run(f"u{i}", action.value)
            assert rec["state"] == "succeeded", (action, rec["error"], rec["log_tail"])
            changed[action.value] = _changes(rec["result"]["commands"])
        services = rf"{PROGRAMS}\Services"
        assert changed == {
            "remove_crm_services": [
                "sc.exe stop CRMIndexerService",
                rf'"{services}\crmindexerservice.exe" /U',
                "sc.exe stop CRMEscalationService",
                rf'"{services}\crmescalationservice.exe" /U',
                rf'"{services}\crmemailmanagerservice.exe" /U',
                rf'"{services}\crmintegrationservice.exe" /U',
                "sc.exe stop CRMTomcat7",
                rf'"{PROGRAMS}\CRM\tomcat\bin\tomcat7.exe" //DS//CRMTomcat7',
            ],
            "unregister_dll": [rf'C:\Windows\SysWOW64\regsvr32.exe /u /s "{PROGRAMS}\CRM\WWWRoot\eware.dll"'],
            "delete_iis_application": [f'{APPCMD_EXE} delete app "Default Web Site/CRM"'],
            "delete_registry_keys": [
                r"reg.exe delete HKLM\SOFTWARE\eWare\Config\/CRM /f /reg:32",
                r"reg.exe delete HKLM\SOFTWARE\eWare\Mappings\/CRM /f /reg:32",
            ],
            "delete_install_folder": [
                "iisreset /stop",
                rf"agent: delete folder {PROGRAMS}\CRM",
                r"agent: delete C:\Windows\SysWOW64\eware.cpl",
                "iisreset /start",
            ],
        }
        m = a.model
        # Only the install's services are gone; IIS itself serves the other sites again.
        assert (
            set(m.services) == {"was", "w3svc", "crmquickfindservice"}
            and m.services["w3svc"].state == "RUNNING"
        )
        assert not m.app_exists and m.registry == {}
        assert not any(k.startswith(PROGRAMS.lower() + "\\crm\\") for k in m.files)
        after = (await a.client.get("/v1/status")).json()
        assert after["version"] is None and after["tomcat"] == "not_installed"
        # Run again, it changes nothing and says what is already gone.
        for i, action in enumerate(UNINSTALL_ACTIONS):
            rec = await a.run(f"again{i}", action.value)
            assert rec["state"] == "succeeded", (action, rec["error"])
            assert _changes(rec["result"].get("commands", [])) in (
                [],
                ["iisreset /stop", "iisreset /start"],
            ), action


async def test_the_dry_run_is_as_strict_as_windows_about_the_uninstall(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    async with dry_run_agent(tmp_path, tokens["agent"]) as a:
        # The folder cannot go while Tomcat runs from it, nor while IIS holds eware.dll.
        rec = await a.run("f1", "delete_install_folder")
        assert rec["state"] == "failed" and "remove the Tomcat service first" in rec["error"]
        # A service program that is not there cannot be run (CreateProcess fails).
        del a.model.files[(PROGRAMS + r"\Services\crmindexerservice.exe").lower()]
        rec = await a.run("s1", "remove_crm_services")
        assert rec["state"] == "failed" and "cannot run crmindexerservice.exe" in rec["error"]
        # net.exe answers 2 for an unknown service (IIS 7+ has no IISADMIN without IIS 6 compatibility).
        r = await a.model.run(["net", "stop", "iisadmin", "/y"])
        assert r.returncode == 2 and "NET HELPMSG 2185" in r.output


async def test_the_read_only_mode_refuses_every_uninstall_step(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    async with dry_run_agent(tmp_path, tokens["agent"], read_only=True) as a:
        errors = {}
        for i, action in enumerate(UNINSTALL_ACTIONS):
            rec = await a.run(f"r{i}", action.value)
            assert rec["state"] == "failed", action
            errors[action.value] = rec["error"]
        # The folder's step looks first: Tomcat still runs (its removal was refused).
        assert errors.pop("delete_install_folder").endswith("remove the Tomcat service first")
        assert all(e.startswith("read-only mode: this would change the server") for e in errors.values()), (
            errors
        )
        m = a.model
        assert m.app_exists and len(m.registry) == 2 and m.services["crmtomcat7"].state == "RUNNING"
