"""The node agent as a Windows service: ``crmcluster agent install-service`` / ``uninstall-service``.

What is installed is :class:`ServiceDefinition` — plain data, tested on any machine:

- service ``crmcluster-agent``, started automatically (delayed, after the network and IIS), as
  LocalSystem or the account given (``--account .\\svc-crmcluster --password …``; the password is
  passed to the Service Control Manager's API, never on a command line);
- restarted on failure: ``sc.exe failure crmcluster-agent reset= 86400
  actions= restart/5000/restart/5000/restart/60000`` and ``sc.exe failureflag … 1`` (also when it
  stops with an error, not only when it crashes);
- run from the virtual environment's Python with the working folder ``%ProgramData%\\crmcluster``,
  whose ``.env`` holds the agent's settings (``deploy/windows/install-agent.ps1`` writes it);
- logs to rotating files ``%ProgramData%\\crmcluster\\logs\\agent.log`` (10 MB, 5 files) and to the
  Windows Event Log (source ``crmcluster-agent``).

pywin32 (the ``[windows]`` extra) is imported only when a service is installed or run, so this
module loads anywhere.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any

SERVICE_NAME = "crmcluster-agent"
DISPLAY_NAME = "crmcluster agent (Sage CRM node agent)"
DESCRIPTION = (
    "Reports this Sage CRM web server to the crmcluster controller and carries out its operations "
    "(IIS, Tomcat, CRM services, backups, the installer)."
)
EVENT_SOURCE = SERVICE_NAME


def program_data() -> PureWindowsPath:
    return PureWindowsPath(os.environ.get("ProgramData", r"C:\ProgramData")) / "crmcluster"


@dataclass(frozen=True)
class ServiceDefinition:
    name: str = SERVICE_NAME
    display_name: str = DISPLAY_NAME
    description: str = DESCRIPTION
    start: str = "delayed-auto"
    #: None: LocalSystem. Else ``DOMAIN\\user`` or ``.\\user`` (needs "Log on as a service").
    account: str | None = None
    working_dir: PureWindowsPath = field(default_factory=program_data)
    #: Milliseconds before each restart after a failure; the count resets after a day.
    restart_delays_ms: tuple[int, ...] = (5000, 5000, 60000)
    reset_after_s: int = 86400
    depends_on: tuple[str, ...] = ("Tcpip", "W3SVC")

    @property
    def log_dir(self) -> PureWindowsPath:
        return self.working_dir / "logs"

    def failure_commands(self) -> list[list[str]]:
        """The restart-on-failure settings, as ``sc.exe`` sets them."""
        actions = "/".join(f"restart/{ms}" for ms in self.restart_delays_ms)
        return [
            ["sc.exe", "failure", self.name, "reset=", str(self.reset_after_s), "actions=", actions],
            ["sc.exe", "failureflag", self.name, "1"],
        ]


def definition(*, account: str | None) -> ServiceDefinition:
    """Everything else the agent needs is in ``%ProgramData%\\crmcluster\\.env``."""
    return ServiceDefinition(account=account)


def log_handlers(defn: ServiceDefinition) -> list[logging.Handler]:
    """Rotating files under ``%ProgramData%\\crmcluster\\logs`` and, on Windows, the Event Log."""
    from node_agent.drivers.windows.host import local_path

    log_dir = local_path(defn.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(
            log_dir / "agent.log", maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
        )
    ]
    if sys.platform == "win32":  # pragma: no cover - needs pywin32 and the Event Log
        handlers.append(logging.handlers.NTEventLogHandler(EVENT_SOURCE))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
    return handlers


def install(defn: ServiceDefinition, *, password: str | None = None) -> list[list[str]]:  # pragma: no cover
    """Install (or update) the service through the Service Control Manager; returns the sc.exe
    commands run after it (restart on failure)."""
    import subprocess

    import win32service  # type: ignore[import-not-found,unused-ignore]
    import win32serviceutil  # type: ignore[import-not-found,unused-ignore]

    start = win32service.SERVICE_AUTO_START
    win32serviceutil.InstallService(
        f"{__name__}.AgentService",
        defn.name,
        defn.display_name,
        startType=start,
        userName=defn.account,
        password=password,
        description=defn.description,
        delayedstart=defn.start == "delayed-auto",
        dependencies=list(defn.depends_on),
    )
    commands = defn.failure_commands()
    for argv in commands:
        subprocess.run(argv, check=True, capture_output=True)
    return commands


def uninstall(name: str = SERVICE_NAME) -> None:  # pragma: no cover
    import win32serviceutil  # type: ignore[import-not-found,unused-ignore]

    try:
        win32serviceutil.StopService(name)
    except Exception:  # noqa: BLE001 - pywin32 raises pywintypes.error when it is not running
        logging.getLogger("crmcluster").debug("%s was not running", name)
    win32serviceutil.RemoveService(name)


def _service_class() -> Any:  # pragma: no cover - runs inside the Service Control Manager
    import servicemanager  # type: ignore[import-not-found,unused-ignore]
    import win32service  # type: ignore[import-not-found,unused-ignore]
    import win32serviceutil  # type: ignore[import-not-found,unused-ignore]

    class AgentService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.server: Any = None

        def SvcStop(self) -> None:
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            if self.server is not None:
                self.server.should_exit = True

        def SvcDoRun(self) -> None:
            import uvicorn

            from config.settings import AgentSettings, load_settings
            from config.tls import check_listen, server_ssl
            from node_agent.app import create_app

            defn = ServiceDefinition()
            os.chdir(str(defn.working_dir))
            root = logging.getLogger()
            root.setLevel(logging.INFO)
            for h in log_handlers(defn):
                root.addHandler(h)
            servicemanager.LogInfoMsg(f"{SERVICE_NAME} starting")
            settings = load_settings(AgentSettings)
            check_listen(settings, settings.listen_host, service=f"agent {settings.name}")
            config = uvicorn.Config(
                create_app(settings),
                host=settings.listen_host,
                port=settings.listen_port,
                log_config=None,
                **server_ssl(settings),  # type: ignore[arg-type]
            )
            self.server = uvicorn.Server(config)
            self.server.run()

    return AgentService


if sys.platform == "win32":  # pragma: no cover
    try:
        AgentService = _service_class()
    except ImportError:  # pywin32 not installed: install-service says so
        pass
