"""The sandbox's install tree: what the Sage CRM installer puts under
``Program Files (x86)\\Sage\\CRM\\<install>`` — ``WWWRoot`` with ``eware.dll``, ``CustomPages`` and
the help, ``tomcat\\webapps`` with the Replication Engine's ``<install>ExchangeSyncEngine.war`` on
the node that holds it, ``Setup`` for the upgrade log — and copies of it (the program files backup,
the guide's ``<install>_backup`` folder).

The tree's version is written into ``eware.dll`` (a text stand-in for the DLL's file version), so a
restored tree reports the version it was backed up at; Tomcat's web apps carry theirs
(``tomcat/webapps/sdata.war``), and so do the CRM services' programs in the shared
``Sage\\CRM\\Services`` folder (:class:`ServicesFolder`) — each put back, or not, by a restore.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from node_agent.backup_files import copy_folder
from node_agent.journal import atomic_write_text

DLL_MARK = "Sage CRM eware.dll stand-in; version="
SDATA_MARK = "sdata "
SERVICE_MARK = "Sage CRM service stand-in; version="
#: The services' programs in ``Sage\CRM\Services`` (the guide: ``crmindexerservice.exe /U``).
SERVICE_EXES = {
    "indexer": "crmindexerservice.exe",
    "escalation": "crmescalationservice.exe",
    "email_manager": "crmemailmanagerservice.exe",
    "integration": "crmintegrationservice.exe",
}


def _marked(path: Path, mark: str) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(mark):
            return line[len(mark) :].strip()
    return None


class InstallTree:
    def __init__(self, root: Path, install_name: str) -> None:
        self.root = root
        self.install = install_name

    # Places ------------------------------------------------------------------------------------------
    @property
    def wwwroot(self) -> Path:
        return self.root / "WWWRoot"

    @property
    def dll(self) -> Path:
        return self.wwwroot / "eware.dll"

    @property
    def webapps(self) -> Path:
        return self.root / "tomcat" / "webapps"

    @property
    def war(self) -> Path:
        return self.webapps / f"{self.install}ExchangeSyncEngine.war"

    @property
    def war_folder(self) -> Path:
        return self.webapps / f"{self.install}ExchangeSyncEngine"

    @property
    def setup(self) -> Path:
        return self.root / "Setup"

    @property
    def upgrade_log(self) -> Path:
        return self.setup / "upgradelog.html"

    def exists(self) -> bool:
        return self.dll.is_file()

    # Version -----------------------------------------------------------------------------------------
    @property
    def version(self) -> str | None:
        return _marked(self.dll, DLL_MARK)

    @property
    def tomcat_version(self) -> str | None:
        """The version of the web apps in this tree's Tomcat (``sdata.war``)."""
        return _marked(self.webapps / "sdata.war", SDATA_MARK)

    def write_webapps(self, version: str) -> None:
        atomic_write_text(self.webapps / "sdata.war", f"{SDATA_MARK}{version}\n")

    def write_dll(self, version: str) -> None:
        atomic_write_text(self.dll, f"{DLL_MARK}{version}\n")

    # Building --------------------------------------------------------------------------------------
    def create(self, *, version: str, replication_engine: bool) -> None:
        """A fresh install of ``version`` (what the installer's "New Install" leaves)."""
        self.write_dll(version)
        (self.wwwroot / "CustomPages").mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.wwwroot / "CustomPages" / "readme.txt", f"Custom pages of {self.install}\n")
        atomic_write_text(self.wwwroot / "HELP" / "EN" / "default.htm", f"<p>Sage CRM {version} help</p>\n")
        atomic_write_text(self.root / "tomcat" / "conf" / "server.xml", '<Server port="8005"/>\n')
        self.webapps.mkdir(parents=True, exist_ok=True)
        self.write_webapps(version)
        self.setup.mkdir(parents=True, exist_ok=True)
        if replication_engine:
            self.add_replication_engine(version)

    def add_replication_engine(self, version: str) -> None:
        atomic_write_text(self.war, f"{self.install}ExchangeSyncEngine {version}\n")
        self.war_folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.war_folder / "WEB-INF" / "web.xml", "<web-app/>\n")

    def remove_replication_engine(self) -> bool:
        """The guide's step: remove the ``.war`` and its unpacked folder. True when there was one."""
        had = self.war.exists() or self.war_folder.exists()
        if self.war.exists():
            self.war.unlink()
        if self.war_folder.exists():
            shutil.rmtree(self.war_folder)
        return had

    @property
    def has_replication_engine(self) -> bool:
        return self.war.exists()

    # Copies ------------------------------------------------------------------------------------------
    def copy_to(self, destination: Path) -> dict[str, object]:
        """Copy the whole install folder (Tomcat included) and write a manifest; returns it."""
        return copy_folder(self.root, destination)


class ServicesFolder:
    """``Program Files (x86)\\Sage\\CRM\\Services``: the CRM services' programs, shared by every
    install on the server (the installer upgrades them; the program files backup copies them)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def exe(self, service: str) -> Path | None:
        name = SERVICE_EXES.get(service)
        return self.root / name if name else None

    def version(self, service: str) -> str | None:
        exe = self.exe(service)
        return _marked(exe, SERVICE_MARK) if exe is not None else None

    def exists(self) -> bool:
        return self.root.is_dir()

    def write(self, version: str) -> None:
        """Every service's program at ``version`` (what the installer lays down)."""
        for name in SERVICE_EXES.values():
            atomic_write_text(self.root / name, f"{SERVICE_MARK}{version}\n")
