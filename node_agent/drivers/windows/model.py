"""A modelled Sage CRM web server for ``--dry-run``: it answers the windows driver's commands,
T-SQL and file operations as Windows, IIS, SQL Server and InstallShield would, and keeps the
state they change, so a whole upgrade (freeze, backups, installer, restore) can be walked through
on any machine while every command is recorded exactly as it would run.

It is as strict as the real server where the driver depends on it: ``BACKUP`` into a folder that
does not exist fails with OS error 3, ``RESTORE`` of a file that was never written fails,
``Setup.exe`` writes a ResultCode of -3 for a response file that still holds placeholders,
``regsvr32`` fails for a DLL that is not there, ``robocopy`` answers 16 for a missing source, a
service that is disabled does not start, a folder something still holds cannot be renamed or
deleted.

The manual uninstall's own programs are modelled too: the CRM services' ``/U``
(``crmindexerservice.exe /U`` …), procrun's ``tomcat7.exe //DS//<service>`` (it stops a running
service first, as Apache's procrun does), ``regsvr32 /u``, ``appcmd delete app``, ``net start|stop``
(``/y`` stops the dependent services; an unknown service is "The service name is invalid", exit
2, as ``net`` answers), ``reg query`` of a key listing its subkeys — so a whole server removal
walks through in a dry run.

Nothing here touches this machine: files live in memory, keyed by their Windows path.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PureWindowsPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from config.settings import AgentSettings
from config.vocabulary import Role
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.host import FileInfo, program
from node_agent.drivers.windows.services import SERVICE_EXES
from node_agent.drivers.windows.tsql import Row, Statement, database_name
from node_agent.runner import CommandResult, LineSink
from node_agent.upgrade_log import UPGRADE_SCRIPTS, ScriptOutcome, render_upgrade_log

RUNNING, STOPPED = "RUNNING", "STOPPED"
_ROLE_SERVICES = {
    Role.INDEXER.value: "indexer",
    Role.ESCALATION.value: "escalation",
    Role.EMAIL_MANAGER.value: "email_manager",
}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _File:
    path: str
    text: str
    modified: datetime = field(default_factory=_now)


@dataclass
class _Service:
    name: str
    display: str
    state: str = STOPPED
    start: str = "AUTO_START"
    #: The services this one depends on (lower-cased names): stopping one of them stops it.
    depends_on: tuple[str, ...] = ()


@dataclass
class _BackupSet:
    database: str
    disk: str
    size: int
    finished: datetime
    uuid: str
    version: str


_NET_HELP = "More help is available by typing NET HELPMSG {}."
#: Keys Sage CRM's setup creates whose values live in their subkeys (one per install).
_PARENT_KEYS = frozenset({"hklm\\software\\eware\\config", "hklm\\software\\eware\\mappings"})


def _key(path: PureWindowsPath | str) -> str:
    return str(PureWindowsPath(str(path))).lower().rstrip("\\")


class ModelledServer:
    """The runner, SQL executor, file system and HTTP server of one modelled web server."""

    def __init__(self, settings: AgentSettings, *, version: str) -> None:
        self.settings = settings
        self.node = settings.name or "crm"
        self.install = settings.install_name
        self.files: dict[str, _File] = {}
        self.dirs: set[str] = set()
        self.sql_dirs: set[str] = set()
        self.sql_files: dict[str, _BackupSet] = {}
        self.backupsets: list[_BackupSet] = []
        self.registry: dict[str, dict[str, str]] = {}
        #: Registry key names as written (``registry`` is keyed lower-case, as Windows compares).
        self.key_names: dict[str, str] = {}
        self.services: dict[str, _Service] = {}
        self.db_version = version
        self.db_user_access = "MULTI_USER"
        self.triggers = {("dbo", "Company", "trg_Company_Audit"): True}
        self.app_pool = f"{self.install}AppPool"
        self.app_exists = True
        self.physical_path = str(PureWindowsPath(settings.windows_programs_root) / self.install / "WWWRoot")
        self.isapi: list[str] = [str(PureWindowsPath(self.physical_path) / "eware.dll")]
        self.w3svc_pid = 4100
        self.worker_pid = 5120
        self.seats: dict[str, str] = {}
        self.doc_store = "\\\\fileserver\\crm\\library"
        #: Test hooks: what the modelled setup answers (ResultCode), whether it writes the upgrade
        #: log, what HAS_PERMS_BY_NAME says for VIEW SERVER STATE.
        self._setup_fault = 0
        self._write_upgrade_log = True
        self._view_server_state = 1
        #: The guide's prerequisites as this server has them (tests take them away): DISM's
        #: features, ASP's parent paths, IIS's websites, memory, SQL Server's TCP/IP and collation.
        self.features = {"IIS-ASP": "Enabled", "IIS-ISAPIExtensions": "Enabled", "IIS-ISAPIFilter": "Enabled"}
        self.parent_paths = True
        self.sites = [settings.windows_site]
        self.memory_bytes = 16 << 30
        self.tcp_enabled = 1
        self.collation = "Latin1_General_CI_AS"
        #: The CRM website's bindings and the certificates netsh has bound, by port.
        self.bindings = ["http/*:80:"]
        self.sslcerts: dict[int, str] = {}
        self._sid = 100000
        self._build(version)

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> ModelledServer:
        return cls(settings, version=settings.dry_run_version)

    # The server as it was installed --------------------------------------------------------------------
    @property
    def root(self) -> PureWindowsPath:
        return PureWindowsPath(self.settings.windows_programs_root)

    def _build(self, version: str) -> None:
        inst = self.root / self.install
        self.put(inst / "WWWRoot" / "eware.dll", f"eware.dll {version}")
        self.put(inst / "tomcat" / "webapps" / "sdata.war", f"sdata {version}")
        if Role.REPLICATION_ENGINE.value in self.settings.roles:
            self.put(inst / "tomcat" / "webapps" / f"{self.install}ExchangeSyncEngine.war", f"re {version}")
        self.put(
            inst / "Setup" / "upgradelog.html",
            "<html>the 7.3 install's log</html>",
            modified=datetime(2016, 5, 4, tzinfo=UTC),
        )
        for exe in SERVICE_EXES.values():
            self.put(self.root / "Services" / exe, f"{exe} {version}")
        self.put(inst / "tomcat" / "bin" / "tomcat7.exe", "Apache Commons Daemon (procrun)")
        self.put(PureWindowsPath(self.settings.windows_system_root) / "SysWOW64" / "eware.cpl", "eware.cpl")
        self.put(PureWindowsPath(self.settings.windows_setup_exe), "InstallShield setup")
        self.put(inst / "License Update" / "licensekeyupdate.exe", "License Key Update application")
        for mode in ("upgrade", "add_node"):
            self.put(
                PureWindowsPath(self.settings.windows_response_files) / f"{mode}-2017 R1.iss",
                "[InstallShield Silent]\nVersion=v7.00\nFile=Response File\n"
                f"; model: mode={mode} version=2017 R1\n"
                "[{9E1B8A4C-0000-4000-8000-CRMCLUSTER00}-SdLicense-0]\nszLicenseKey={{license_key}}\n"
                + (
                    "[{9E1B8A4C-0000-4000-8000-CRMCLUSTER00}-SQLLogin-0]\nszPassword={{db_password}}\n"
                    if mode == "upgrade"
                    else ""
                ),
            )
        for key, values in (
            (
                "HKLM\\SOFTWARE\\eWare\\Config\\/" + self.install,
                {"Version": version, "InstallName": self.install, "RootPath": str(inst)},
            ),
            ("HKLM\\SOFTWARE\\eWare\\Mappings\\/" + self.install, {"Path": f"/{self.install.lower()}"}),
        ):
            self.registry[self._reg(key)] = values
            self.key_names[self._reg(key)] = key
        placed = {_ROLE_SERVICES[r] for r in self.settings.roles if r in _ROLE_SERVICES}
        # IIS 7 and later: W3SVC depends on WAS (and HTTP), not on the IIS Admin Service (which
        # exists only with the "IIS 6 Management Compatibility" role, not modelled here).
        self.services["was"] = _Service("WAS", "Windows Process Activation Service", RUNNING)
        self.services["w3svc"] = _Service(
            "W3SVC", "World Wide Web Publishing Service", RUNNING, depends_on=("was",)
        )
        tomcat = self.settings.windows_tomcat_service.replace("{install}", self.install)
        self.services[tomcat.lower()] = _Service(tomcat, f"Apache Tomcat {tomcat}", RUNNING)
        for service, name in self.settings.windows_services.items():
            on = service in placed
            self.services[name.lower()] = _Service(
                name, name, RUNNING if on else STOPPED, "AUTO_START" if on else "DISABLED"
            )

    def put(self, path: PureWindowsPath, text: str, *, modified: datetime | None = None) -> None:
        self.files[_key(path)] = _File(str(path), text, modified or _now())
        parent = PureWindowsPath(str(path)).parent
        while str(parent) not in ("", "\\") and parent != parent.parent:
            self.dirs.add(_key(parent))
            parent = parent.parent
        self.dirs.add(_key(parent))

    @staticmethod
    def _reg(key: str) -> str:
        return key.lower()

    # HostFiles ---------------------------------------------------------------------------------------
    def _under(self, path: PureWindowsPath | str) -> list[_File]:
        prefix = _key(path) + "\\"
        return [f for k, f in self.files.items() if k.startswith(prefix)]

    async def exists(self, path: PureWindowsPath) -> bool:
        return _key(path) in self.files or _key(path) in self.dirs or self._is_unc(path)

    async def is_dir(self, path: PureWindowsPath) -> bool:
        return _key(path) in self.dirs

    async def info(self, path: PureWindowsPath) -> FileInfo | None:
        f = self.files.get(_key(path))
        return FileInfo(len(f.text.encode()), f.modified) if f else None

    async def read_text(self, path: PureWindowsPath) -> str:
        f = self.files.get(_key(path))
        if f is None:
            raise FileNotFoundError(2, "The system cannot find the file specified", str(path))
        return f.text

    async def write_text(self, path: PureWindowsPath, text: str) -> None:
        self.put(path, text)

    async def mkdir(self, path: PureWindowsPath) -> None:
        p = PureWindowsPath(str(path))
        while str(p) not in ("", "\\") and p != p.parent:
            self.dirs.add(_key(p))
            p = p.parent

    def _held(self, folder: str) -> str | None:
        """What still holds files under ``folder`` open (IIS, Tomcat, a CRM service)."""
        f = _key(folder)
        inst = _key(self.root / self.install)
        if f in (inst, _key(self.root / "Services")) or inst.startswith(f + "\\"):
            for s in self.services.values():
                if s.state == RUNNING and s.name.lower() not in ("was",):
                    return s.name
        return None

    async def rename(self, source: PureWindowsPath, target: PureWindowsPath) -> None:
        src, dst = _key(source), _key(target)
        if dst in self.files or dst in self.dirs:
            raise FileExistsError(183, "Cannot create a file when that file already exists", str(target))
        if src in self.files:
            f = self.files.pop(src)
            self.put(target, f.text, modified=f.modified)
            return
        if src not in self.dirs:
            raise FileNotFoundError(2, "The system cannot find the file specified", str(source))
        holder = self._held(str(source))
        if holder is not None:
            raise PermissionError(
                32, f"The process cannot access the file because it is being used ({holder})", str(source)
            )
        for f in self._under(source):
            self.files.pop(_key(f.path))
            self.put(PureWindowsPath(str(target) + f.path[len(str(source)) :]), f.text, modified=f.modified)
        self.dirs = {d for d in self.dirs if not (d == src or d.startswith(src + "\\"))}
        await self.mkdir(target)

    async def remove(self, path: PureWindowsPath) -> None:
        self.files.pop(_key(path), None)

    async def remove_tree(self, path: PureWindowsPath) -> None:
        k = _key(path)
        holder = self._held(str(path)) if k in self.dirs else None
        if holder is not None:
            raise PermissionError(
                32, f"The process cannot access the file because it is being used ({holder})", str(path)
            )
        for f in self._under(path):
            self.files.pop(_key(f.path))
        self.dirs = {d for d in self.dirs if not (d == k or d.startswith(k + "\\"))}

    async def listdir(self, path: PureWindowsPath) -> list[str]:
        depth = len(PureWindowsPath(str(path)).parts)
        names = {PureWindowsPath(f.path).parts[depth] for f in self._under(path)}
        return sorted(names)

    async def manifest(self, path: PureWindowsPath) -> dict[str, Any]:
        h = hashlib.sha256()
        files = self._under(path)
        base = len(str(PureWindowsPath(str(path)))) + 1
        for f in sorted(files, key=lambda x: x.path.lower()):
            h.update(f.path[base:].lower().encode() + b"\0" + hashlib.sha256(f.text.encode()).digest())
        return {
            "files": len(files),
            "bytes": sum(len(f.text.encode()) for f in files),
            "sha256": h.hexdigest(),
        }

    async def free_bytes(self, path: PureWindowsPath) -> int | None:
        return 120 * 1024**3

    @staticmethod
    def _is_unc(path: PureWindowsPath | str) -> bool:
        return str(path).startswith("\\\\")

    # CommandRunner --------------------------------------------------------------------------------------
    async def run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_line: LineSink | None = None,
    ) -> CommandResult:
        handler: Callable[[list[str]], CommandResult] | None = {
            "sc": self._sc,
            "reg": self._reg_exe,
            "iisreset": self._iisreset,
            "appcmd": self._appcmd,
            "robocopy": self._robocopy,
            "regsvr32": self._regsvr32,
            "icacls": self._icacls,
            "setup": self._setup,
            "dism": self._dism,
            "powershell": self._powershell,
            "netsh": self._netsh,
            "net": self._net,
            "tomcat7": self._procrun,
            **dict.fromkeys((exe.removesuffix(".exe") for exe in SERVICE_EXES.values()), self._service_exe),
        }.get(program(argv))
        if (
            handler is not None
            and handler in (self._service_exe, self._procrun)
            and _key(argv[0]) not in self.files
        ):
            handler = None  # CreateProcess: the program is not there
        if handler is None:
            raise FileNotFoundError(2, "The system cannot find the file specified", argv[0])
        result = handler(argv)
        if on_line is not None:
            for line in result.output.splitlines():
                on_line(line)
        return result

    def _svc_text(self, s: _Service) -> str:
        code = {RUNNING: 4, STOPPED: 1}[s.state]
        return (
            f"SERVICE_NAME: {s.name}\nDISPLAY_NAME: {s.display}\n"
            "        TYPE               : 10  WIN32_OWN_PROCESS\n"
            f"        STATE              : {code}  {s.state}\n        PID                : "
            f"{self.w3svc_pid if s.name == 'W3SVC' else 2000}\n"
        )

    def _sc(self, argv: list[str]) -> CommandResult:
        verb = argv[1].lower()
        if verb == "query" and len(argv) > 2 and argv[2] == "type=":
            return CommandResult(0, "\n".join(self._svc_text(s) for s in self.services.values()))
        s = self.services.get(argv[2].lower()) if len(argv) > 2 else None
        if s is None:
            return CommandResult(
                1060,
                "[SC] OpenService FAILED 1060:\n\n"
                "The specified service does not exist as an installed service.",
            )
        if verb in ("query", "queryex"):
            return CommandResult(0, self._svc_text(s))
        if verb == "qc":
            return CommandResult(
                0,
                f"SERVICE_NAME: {s.name}\n        START_TYPE         : 2   {s.start}\n"
                f"        SERVICE_START_NAME : .\\svc-crm",
            )
        if verb == "config":
            s.start = {"auto": "AUTO_START", "disabled": "DISABLED", "demand": "DEMAND_START"}[
                argv[4].lower()
            ]
            return CommandResult(0, "[SC] ChangeServiceConfig SUCCESS")
        if verb == "start":
            if s.start == "DISABLED":
                return CommandResult(
                    1058,
                    "[SC] StartService FAILED 1058:\n\nThe service cannot be started, "
                    "either because it is disabled or because it has no enabled devices.",
                )
            if s.state == RUNNING:
                return CommandResult(
                    1056, "[SC] StartService FAILED 1056:\n\nAn instance of the service is already running."
                )
            s.state = RUNNING
            return CommandResult(0, self._svc_text(s))
        if verb == "stop":
            if s.state == STOPPED:
                return CommandResult(
                    1062, "[SC] ControlService FAILED 1062:\n\nThe service has not been started."
                )
            s.state = STOPPED
            return CommandResult(0, self._svc_text(s))
        return CommandResult(1639, f"[SC] unknown verb {verb}")

    def _reg_exe(self, argv: list[str]) -> CommandResult:
        verb, key = argv[1].lower(), self._reg(argv[2])
        if verb == "query":
            values = self.registry.get(key)
            subkeys = sorted(k for k in self.registry if k.startswith(key + "\\"))
            if values is None and (subkeys or key in _PARENT_KEYS):
                # A key without values of its own: reg.exe lists its subkeys, as the view names them.
                view = (
                    "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\"
                    if "/reg:32" in argv
                    else "HKEY_LOCAL_MACHINE\\SOFTWARE\\"
                )
                return CommandResult(
                    0, "\n".join(view + self.key_names.get(k, k).split("\\", 2)[2] for k in subkeys)
                )
            if values is None:
                return CommandResult(
                    1, "ERROR: The system was unable to find the specified registry key or value."
                )
            name = argv[argv.index("/v") + 1] if "/v" in argv else None
            lines = [f"    {n}    REG_SZ    {v}" for n, v in values.items() if name is None or n == name]
            return CommandResult(0 if lines else 1, f"\n{argv[2]}\n" + "\n".join(lines))
        if verb == "export":
            values = self.registry.get(key)
            if values is None:
                return CommandResult(
                    1, "ERROR: The system was unable to find the specified registry key or value."
                )
            body = (
                "Windows Registry Editor Version 5.00\n\n"
                + f"[{argv[2]}]\n"
                + "".join(f'"{n}"="{v}"\n' for n, v in values.items())
            )
            self.put(PureWindowsPath(argv[3]), body)
            return CommandResult(0, "The operation completed successfully.")
        if verb == "delete":
            if self.registry.pop(key, None) is None:
                return CommandResult(
                    1, "ERROR: The system was unable to find the specified registry key or value."
                )
            return CommandResult(0, "The operation completed successfully.")
        if verb == "import":
            f = self.files.get(_key(argv[2]))
            if f is None:
                return CommandResult(
                    1, "ERROR: Error opening the file. There may be a disk or file system error."
                )
            current: dict[str, str] | None = None
            for line in f.text.splitlines():
                if line.startswith("["):
                    name = line.strip("[]")
                    current = self.registry.setdefault(self._reg(name), {})
                    self.key_names[self._reg(name)] = name
                elif current is not None and "=" in line:
                    n, v = line.split("=", 1)
                    current[n.strip('"')] = v.strip('"')
            return CommandResult(0, "The operation completed successfully.")
        return CommandResult(1, "ERROR: Invalid syntax.")

    def _iisreset(self, argv: list[str]) -> CommandResult:
        w3 = self.services["w3svc"]
        if argv[1].lower() == "/stop":
            w3.state = STOPPED
            self.seats.clear()
            return CommandResult(0, "Attempting stop...\nInternet services successfully stopped")
        if argv[1].lower() == "/start":
            w3.state = RUNNING
            self.w3svc_pid += 1
            self.worker_pid += 1
            return CommandResult(0, "Attempting start...\nInternet services successfully started")
        return CommandResult(
            0, f"Status for World Wide Web Publishing Service ( W3SVC ) : {w3.state.title()}"
        )

    def _appcmd(self, argv: list[str]) -> CommandResult:
        verb, what = argv[1].lower(), argv[2].lower()
        app = f"{self.settings.windows_site}/{self.install}"
        if (verb, what) in (("list", "app"), ("delete", "app")):
            if argv[3].lower() != app.lower() or not self.app_exists:
                return CommandResult(
                    1, f'ERROR ( message:Cannot find APP object with identifier "{argv[3]}". )'
                )
            if verb == "delete":
                self.app_exists = False
                return CommandResult(0, f'APP object "{argv[3]}" deleted')
            if "/text:applicationPool" in argv:
                return CommandResult(0, self.app_pool)
            return CommandResult(0, f'APP "{argv[3]}" (applicationPool:{self.app_pool})')
        if (verb, what) == ("list", "vdir"):
            return CommandResult(0, self.physical_path)
        if (verb, what) == ("list", "wp"):
            running = self.services["w3svc"].state == RUNNING
            return CommandResult(
                0, f'WP "{self.worker_pid}" (applicationPool:{self.app_pool})' if running else ""
            )
        if (verb, what) == ("list", "site") and len(argv) > 3 and not argv[3].startswith("/"):
            if argv[3].lower() not in (s.lower() for s in self.sites):
                return CommandResult(
                    1, f'ERROR ( message:Cannot find SITE object with identifier "{argv[3]}". )'
                )
            return CommandResult(0, ",".join(self.bindings))
        if (verb, what) == ("list", "site"):
            return CommandResult(0, "".join(f"{name}\n" for name in self.sites))
        if (verb, what) == ("list", "config") and "/section:system.webserver/asp" in (
            a.lower() for a in argv
        ):
            if argv[3].lower() != app.lower():
                return CommandResult(
                    1, f'ERROR ( message:Cannot find SITE object with identifier "{argv[3]}". )'
                )
            return CommandResult(0, "true" if self.parent_paths else "false")
        if (verb, what) == ("list", "config"):
            return CommandResult(
                0,
                "<system.webServer>\n  <security>\n    <isapiCgiRestriction>\n"
                + "".join(f'      <add path="{p}" allowed="true" />\n' for p in self.isapi)
                + "    </isapiCgiRestriction>\n",
            )
        if (verb, what) == ("set", "vdir"):
            path = next(a.split(":", 1)[1] for a in argv if a.startswith("/physicalPath:"))
            self.physical_path = path
            return CommandResult(0, f'VDIR object "{app}/" changed')
        if (verb, what) == ("set", "config"):
            m = re.search(r"path='([^']+)'", argv[4])
            if m is None:
                return CommandResult(1, "ERROR ( message:Malformed collection indexer. )")
            if m.group(1).lower() in (p.lower() for p in self.isapi):
                return CommandResult(183, "ERROR ( message:Cannot add duplicate collection entry )")
            self.isapi.append(m.group(1))
            return CommandResult(
                0, 'Applied configuration changes to section "system.webServer/security/isapiCgiRestriction"'
            )
        if (verb, what) == ("recycle", "apppool"):
            self.worker_pid += 1
            self.seats.clear()
            return CommandResult(0, f'"{self.app_pool}" successfully recycled')
        return CommandResult(1, "ERROR ( message:Unknown command. )")

    def _robocopy(self, argv: list[str]) -> CommandResult:
        src, dst = argv[1], argv[2]
        if _key(src) not in self.dirs:
            return CommandResult(
                16,
                f"ERROR 2 (0x00000002) Accessing Source Directory {src}\\\n"
                "The system cannot find the file specified.",
            )
        copied = extra = 0
        wanted = set()
        for f in self._under(src):
            target = PureWindowsPath(dst + f.path[len(src) :])
            wanted.add(_key(target))
            old = self.files.get(_key(target))
            if old is None or old.text != f.text:
                self.put(target, f.text, modified=f.modified)
                copied += 1
        if "/mir" in [a.lower() for a in argv]:  # /MIR: what the source does not hold goes
            for f in self._under(dst):
                if _key(f.path) not in wanted:
                    del self.files[_key(f.path)]
                    extra += 1
        self.dirs.add(_key(dst))
        code = (1 if copied else 0) | (2 if extra else 0)
        return CommandResult(code, f"   Files :  {copied}  copied, {extra} extra")

    def _dism(self, argv: list[str]) -> CommandResult:
        if "/get-features" not in (a.lower() for a in argv):
            return CommandResult(87, "Error: 87\n\nThe option is unknown.")
        rows = "".join(f"{name:<44} | {state}\n" for name, state in sorted(self.features.items()))
        return CommandResult(
            0,
            "Deployment Image Servicing and Management tool\nVersion: 10.0.17763.1\n\n"
            "Image Version: 10.0.17763.1\n\nFeatures listing for package : "
            "Microsoft-Windows-ServerCore-Package~31bf3856ad364e35~amd64~~10.0.17763.1\n\n"
            f"{'Feature Name':<44} | State\n{'-' * 44} | {'-' * 8}\n{rows}\n"
            "The operation completed successfully.\n",
        )

    def _netsh(self, argv: list[str]) -> CommandResult:
        port = int(argv[-1].rpartition(":")[2])
        cert = self.sslcerts.get(port)
        if cert is None:
            return CommandResult(
                1,
                "\nSSL Certificate bindings:\n-------------------------\n\n"
                "The system cannot find the file specified.\n",
            )
        return CommandResult(
            0,
            "\nSSL Certificate bindings:\n-------------------------\n\n"
            f"    IP:port                      : 0.0.0.0:{port}\n    Certificate Hash             : {cert}\n"
            "    Application ID               : {4dc3e181-e14b-4a21-b022-59fc669b0914}\n"
            "    Certificate Store Name       : My\n",
        )

    async def tls_handshake(self, host: str | None, port: int) -> bool:
        """The modelled IIS answers TLS on a port with an https binding and a bound certificate."""
        bound = any(b.lower().startswith(f"https/*:{port}:") for b in self.bindings)
        return bound and port in self.sslcerts

    def _powershell(self, argv: list[str]) -> CommandResult:
        if argv[-1] == "(Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory":
            return CommandResult(0, f"{self.memory_bytes}\n")
        return CommandResult(1, f"The term '{argv[-1]}' is not recognized")

    def _regsvr32(self, argv: list[str]) -> CommandResult:
        """``regsvr32 [/u] /s <dll>``: 3 when the DLL cannot be loaded (LoadLibrary failed)."""
        return (
            CommandResult(0, "") if _key(argv[-1]) in self.files else CommandResult(3, "LoadLibrary failed")
        )

    # The manual uninstall's programs ------------------------------------------------------------------
    def _net(self, argv: list[str]) -> CommandResult:
        """``net start|stop <service> [/y]``: exit 2 for every error, as net.exe does."""
        verb = argv[1].lower() if len(argv) > 1 else ""
        name = argv[2] if len(argv) > 2 else ""
        s = self.services.get(name.lower())
        if verb not in ("start", "stop") or s is None:
            return CommandResult(2, "The service name is invalid.\n\n" + _NET_HELP.format(2185))
        if verb == "start":
            if s.state == RUNNING:
                return CommandResult(
                    2,
                    "The requested service has already been started.\n\n" + _NET_HELP.format(2182),
                )
            for dep in s.depends_on:
                self.services[dep].state = RUNNING
            s.state = RUNNING
            if s.name == "W3SVC":
                self.w3svc_pid += 1
            return CommandResult(0, f"The {s.display} service was started successfully.")
        if s.state != RUNNING:
            return CommandResult(
                2,
                f"The {s.display} service is not started.\n\n" + _NET_HELP.format(3521),
            )
        dependents = [
            d for d in self.services.values() if name.lower() in d.depends_on and d.state == RUNNING
        ]
        if dependents and "/y" not in [a.lower() for a in argv]:
            return CommandResult(
                2,
                "The following services are dependent on the service. "
                "Do you want to continue this operation? (Y/N) [N]: No valid response was provided.",
            )
        for d in dependents:
            d.state = STOPPED
        s.state = STOPPED
        if "w3svc" in (name.lower(), *(d.name.lower() for d in dependents)):
            self.seats.clear()
        return CommandResult(0, f"The {s.display} service was stopped successfully.")

    def _service_exe(self, argv: list[str]) -> CommandResult:
        """A CRM service's own program: ``/U`` removes the service (it must be stopped: a running
        service is only marked for deletion, so the check after it reads it still there)."""
        exe = PureWindowsPath(argv[0]).name.lower()
        service = next(k for k, v in SERVICE_EXES.items() if v == exe)
        name = self.settings.windows_services.get(service, service).lower()
        if [a.upper() for a in argv[1:]] != ["/U"]:
            return CommandResult(1, f"{exe}: usage: {exe} [/U]")
        s = self.services.get(name)
        if s is None:
            return CommandResult(1, f"The specified service does not exist as an installed service ({name}).")
        if s.state == RUNNING:
            return CommandResult(0, f"The service {s.name} is marked for deletion.")
        del self.services[name]
        return CommandResult(0, f"The uninstall has completed: {s.name} was removed.")

    def _procrun(self, argv: list[str]) -> CommandResult:
        """Apache procrun (``tomcat7.exe``): ``//DS//<service>`` stops the service if it runs, then
        deletes it."""
        if len(argv) < 2 or not argv[1].startswith("//DS//"):
            return CommandResult(1, "procrun: only //DS// is modelled")
        name = argv[1][6:].lower()
        s = self.services.get(name)
        if s is None:
            return CommandResult(1, f"Failed to open service '{argv[1][6:]}': the service does not exist")
        del self.services[name]
        return CommandResult(0, "")

    def _icacls(self, argv: list[str]) -> CommandResult:
        if _key(argv[1]) not in self.files:
            return CommandResult(2, f"{argv[1]}: The system cannot find the file specified.")
        return CommandResult(
            0, f"processed file: {argv[1]}\nSuccessfully processed 1 files; Failed processing 0 files"
        )

    def _setup(self, argv: list[str]) -> CommandResult:
        f1 = next((a[3:] for a in argv if a.lower().startswith("/f1")), "")
        f2 = next((a[3:] for a in argv if a.lower().startswith("/f2")), "")
        if "/s" not in [a.lower() for a in argv] or not f2:
            return CommandResult(0, "")  # the wizard would open on the desktop
        response = self.files.get(_key(f1))
        code = self._setup_fault
        if response is None:
            code = -8
        elif "{{" in response.text:
            code = -3
        if code == 0 and response is not None:
            m = re.search(r"mode=(\w+) version=(.+)", response.text)
            mode, version = (m.group(1), m.group(2).strip()) if m else ("upgrade", "2017 R1")
            self._install(mode, version)
        self.put(
            PureWindowsPath(f2),
            f"[InstallShield Silent]\nVersion=v7.00\nFile=Log File\n[ResponseResult]\nResultCode={code}\n",
        )
        return CommandResult(0, "")

    def _install(self, mode: str, version: str) -> None:
        inst = self.root / self.install
        from_version = self.registry[self._reg("HKLM\\SOFTWARE\\eWare\\Config\\/" + self.install)]["Version"]
        self.put(inst / "WWWRoot" / "eware.dll", f"eware.dll {version}")
        self.put(inst / "tomcat" / "webapps" / "sdata.war", f"sdata {version}")
        for exe in SERVICE_EXES.values():  # the shared Services folder is upgraded too
            self.put(self.root / "Services" / exe, f"{exe} {version}")
        self.registry[self._reg("HKLM\\SOFTWARE\\eWare\\Config\\/" + self.install)]["Version"] = version
        database = Role.DATABASE.value in self.settings.roles
        if mode == "upgrade" and database:
            self.db_version = version
        if mode == "upgrade" and self._write_upgrade_log:
            outcomes = [ScriptOutcome(s, True, "completed") for s in UPGRADE_SCRIPTS]
            self.put(
                inst / "Setup" / "upgradelog.html",
                render_upgrade_log(
                    install_name=self.install,
                    from_version=from_version,
                    to_version=version,
                    outcomes=outcomes,
                    must_fix=[],
                    completed=True,
                    when=_now().strftime("%Y-%m-%d %H:%M:%S UTC"),
                ),
            )

    # SqlExecutor ------------------------------------------------------------------------------------------
    async def execute(self, statement: Statement) -> list[Row]:
        return (await self.session([statement]))[0]

    async def session(
        self, statements: Sequence[Statement], *, always: Sequence[Statement] = ()
    ) -> list[list[Row]]:
        out: list[list[Row]] = []
        try:
            for st in statements:
                out.append(self._sql(st))
        finally:
            for st in always:
                self._sql(st)
        return out

    def _sql(self, st: Statement) -> list[Row]:
        db = database_name(self.settings.crm_url) if self.settings.crm_db_url else self.install
        p = st.params
        if st.name == "create_subdir":
            self.sql_dirs.add(_key(p[0]))
            p0 = PureWindowsPath(p[0])
            while p0 != p0.parent:
                self.sql_dirs.add(_key(p0))
                p0 = p0.parent
            return []
        if st.name == "backup_database":
            folder = _key(PureWindowsPath(p[0]).parent)
            if folder not in self.sql_dirs:
                raise ActionFailed(
                    f"SQL Server: Cannot open backup device '{p[0]}'. Operating system error "
                    "3(The system cannot find the path specified.). "
                    "BACKUP DATABASE is terminating abnormally."
                )
            bs = _BackupSet(
                db,
                p[0],
                734_003_200 + len(self.backupsets),
                _now(),
                str(uuid.uuid4()).upper(),
                self.db_version,
            )
            self.backupsets.append(bs)
            self.sql_files[_key(p[0])] = bs
            return []
        if st.name in ("verify_backup", "restore_database"):
            kept = self.sql_files.get(_key(p[0]))
            if kept is None:
                raise ActionFailed(
                    f"SQL Server: Cannot open backup device '{p[0]}'. Operating system error 2"
                    "(The system cannot find the file specified.)."
                )
            if st.name == "restore_database":
                if self.db_user_access != "SINGLE_USER":
                    raise ActionFailed(
                        "SQL Server: Exclusive access could not be obtained because the database "
                        "is in use. (3101)"
                    )
                self.db_version = kept.version
            return []
        if st.name == "backup_record":
            hits = [b for b in self.backupsets if b.database == p[0] and b.disk.lower() == str(p[1]).lower()]
            b = hits[-1] if hits else None
            return [(b.size, 1, 1, b.finished, b.uuid, b.database)] if b else []
        if st.name == "single_user":
            self.db_user_access = "SINGLE_USER"
            return []
        if st.name == "multi_user":
            self.db_user_access = "MULTI_USER"
            return []
        if st.name in ("view_server_state",):
            return [(self._view_server_state,)]
        if st.name == "tcp_enabled":
            return [(self.tcp_enabled,)]
        if st.name == "collation":
            return [(self.collation, self.collation)]
        if st.name == "sql_memory":
            return [(self.memory_bytes, 734_003_200)]
        if st.name == "login_rights":
            return [("crmcluster", 1, 1, 1, 1, 1)]
        if st.name == "sessions":
            rows: list[Row] = []
            if self.services["w3svc"].state == RUNNING:
                rows.append((self.node.upper(), "eware.dll", 1))
            tomcat = self.settings.windows_tomcat_service.replace("{install}", self.install).lower()
            if self.services[tomcat].state == RUNNING:
                rows.append((self.node.upper(), "jTDS", 10))
            return rows
        if st.name == "enabled_triggers":
            return [k for k, on in self.triggers.items() if on]
        if st.name in ("disable_trigger", "enable_trigger"):
            m = re.search(r"\[([^\]]+)\]\.\[([^\]]+)\] ON \[([^\]]+)\]\.\[([^\]]+)\]", st.text)
            if m:
                self.triggers[(m.group(1), m.group(4), m.group(2))] = st.name == "enable_trigger"
            return []
        if st.name == "views":
            return [
                ("dbo", "vCompany", "CREATE VIEW vCompany AS SELECT Comp_CompanyId, Comp_Name FROM Company")
            ]
        return []

    # Records and the web ------------------------------------------------------------------------------------
    def fingerprint(self, ids: list[int] | None, ctx: OperationContext) -> dict[str, Any]:
        ctx.record(
            "[CRM] SELECT Comp_CompanyId, … FROM Company WHERE Comp_CompanyId IN (…) (the 20-record sample)"
        )
        chosen = ids or list(range(1, 21))
        records = {str(i): hashlib.sha256(f"company {i}".encode()).hexdigest() for i in chosen}
        return {
            "records": records,
            "schema": hashlib.sha256(self.db_version.encode()).hexdigest(),
            "schema_version": self.db_version,
        }

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._http)

    def _http(self, request: httpx.Request) -> httpx.Response:
        inst = self.install.lower()
        path = request.url.path.lower()
        if self.services["w3svc"].state != RUNNING:
            raise httpx.ConnectError("connection refused (IIS is stopped)", request=request)
        if path in (f"/{inst}/eware.dll/go", f"/{inst}/eware.dll/logon") and request.method == "GET":
            self._sid += 1
            return httpx.Response(200, html=logon_page(inst, self._sid))
        if path == f"/{inst}/eware.dll/logon" and request.method == "POST":
            form = parse_qs(request.content.decode())
            user = form.get("EWARE_USERID", [""])[0]
            password = form.get("PASSWORD", [""])[0]
            if not user or not password:
                return httpx.Response(
                    200, html=logon_page(inst, self._sid, error="Invalid user name or password")
                )
            self._sid += 1
            self.seats[str(self._sid)] = user
            return httpx.Response(200, html=logged_on_page(inst, self._sid, user))
        if path == f"/{inst}/eware.dll/logout":
            sid = parse_qs(urlsplit(str(request.url)).query).get("SID", [""])[0]
            self.seats.pop(sid, None)
            return httpx.Response(200, html=logon_page(inst, self._sid + 1))
        return httpx.Response(404, text="Not Found")


def logon_page(inst: str, sid: int, *, error: str = "") -> str:
    """Sage CRM's logon form as eware.dll serves it (EWARE_USERID, PASSWORD, a provisional SID)."""
    return (
        f'<html><body><form name="EntryForm" method="POST" action="/{inst}/eware.dll/Logon?SID={sid}&Act=0">'
        f"{f'<p class=ErrorContent>{error}</p>' if error else ''}"
        '<input type="text" name="EWARE_USERID" value=""><input type="password" name="PASSWORD" value="">'
        '<input type="hidden" name="HIDDEN_BrowserType" value="Other"><input type="submit" value="Log On">'
        "</form></body></html>"
    )


def logged_on_page(inst: str, sid: int, user: str) -> str:
    return (
        f'<html><body><div id="topContent">{user}</div>'
        f'<a href="/{inst}/eware.dll/Do?SID={sid}&Act=520">My CRM</a>'
        f'<a href="/{inst}/eware.dll/Logout?SID={sid}" title="Log Out">Log Out</a></body></html>'
    )
