"""What the sandbox's action modules see of the node they act on.

:class:`~node_agent.drivers.sandbox.host.SandboxDriver` implements :class:`SandboxNode`; the
action modules (:mod:`.backups`) depend on this protocol, not on the driver, so the driver can
import them without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import AgentSettings
from node_agent.drivers.sandbox.crm_database import SandboxCrmDatabase
from node_agent.drivers.sandbox.install_tree import InstallTree, ServicesFolder
from node_agent.drivers.sandbox.registry import SandboxRegistry


class SandboxNode(Protocol):
    """One sandbox Sage CRM server: its settings, folders, registry, CRM database and saved state."""

    settings: AgentSettings
    install_name: str
    programs_root: Path
    backup_root: Path
    registry: SandboxRegistry
    engine: AsyncEngine
    db: SandboxCrmDatabase
    state: dict[str, Any]
    #: The played server's folder (``<data dir>/sandbox``).
    base: Path

    @property
    def holds_database(self) -> bool:
        """This node holds the database role (it plays the SQL Server side too)."""
        ...

    @property
    def tree(self) -> InstallTree:
        """The live install tree (the one the website's physical path points into)."""
        ...

    @property
    def version(self) -> str | None: ...

    @property
    def tomcat_home(self) -> Path:
        """The folder the Tomcat service runs from (its web apps are under it)."""
        ...

    @property
    def tomcat_version(self) -> str | None: ...

    @property
    def services_folder(self) -> ServicesFolder: ...

    def service_versions(self) -> dict[str, str]: ...

    def update_state(self, **changes: Any) -> None: ...

    async def refresh_sessions(self) -> None: ...
