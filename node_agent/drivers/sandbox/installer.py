"""The sandbox's Sage CRM installer, "Upgrade previous version of CRM" (7.2 or 7.3 → 2017 R1).

It does what the guide's install wizard does, in its order: stops IIS, copies the new program
files (``eware.dll``, Tomcat's web apps, the help), then runs the upgrade scripts one by one —
each changing something real — and writes ``Setup/upgradelog.html``:

=========================== ===========================================================
CustomPages.es              new internal custom pages (files under ``WWWRoot/CustomPages``)
Custom_Captions.es          new captions (rows in ``Custom_Captions``)
updatehelplink.es           the new help content (``WWWRoot/HELP``)
update_metadata.es          metadata rows (``Custom_Edits``)
addConstraints.es           an integrity constraint (unique index on ``Custom_Captions``)
views.es                    system view ``vCompany`` rebuilt with new columns
user_views.es               user view ``vUserCompanyList`` rebuilt
Tables.es                   a new table (``WelcomeDashboard``) and a new column
Update_indexes_mssql.sql    an index on ``Company``
=========================== ===========================================================

On the database server (``with_database``) the database scripts change the CRM database and its
schema version; on the other servers ("backup is not required") the database is already upgraded
and only the files change — so they must come after the database server, as the guide says.
Every script may run again after a failure (each checks before it changes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from config.vocabulary import Role
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.sandbox.crm_database import SandboxCrmDatabase, captions, edits
from node_agent.drivers.sandbox.install_tree import InstallTree, ServicesFolder
from node_agent.drivers.sandbox.registry import SandboxRegistry, config_key, mappings_key
from node_agent.journal import atomic_write_text
from node_agent.upgrade_log import UPGRADE_SCRIPTS, ScriptOutcome, render_upgrade_log

TARGET = "2017 R1"
UPGRADABLE = ("7.2", "7.3")
_FAIL_AT = "views.es"

_welcome_md = MetaData()
welcome_dashboard = Table(
    "WelcomeDashboard",
    _welcome_md,
    Column("WDsh_Id", Integer, primary_key=True, autoincrement=True),
    Column("WDsh_Name", String(100), nullable=False),
)


class InstallerFault(Exception):
    """A script failed (fault injection); the upgrade stops there."""


class SandboxInstaller:
    def __init__(
        self,
        *,
        tree: InstallTree,
        registry: SandboxRegistry,
        db: SandboxCrmDatabase | None,
        install_name: str,
    ) -> None:
        self.tree = tree
        self.registry = registry
        self.db = db
        self.install = install_name

    # The database scripts -------------------------------------------------------------------------------
    async def _db(self, fn: Callable[[AsyncConnection], Awaitable[None]]) -> None:
        assert self.db is not None
        async with self.db.engine.begin() as conn:
            await fn(conn)

    async def _captions(self, conn: AsyncConnection) -> None:
        for code, us in (("WelcomeDashboard", "Welcome"), ("InteractiveDashboard", "Interactive Dashboard")):
            have = await conn.scalar(
                select(captions.c.Capt_CaptionId).where(
                    captions.c.Capt_Family == "Dashboards", captions.c.Capt_Code == code
                )
            )
            if have is None:
                await conn.execute(
                    captions.insert().values(Capt_Family="Dashboards", Capt_Code=code, Capt_US=us)
                )

    async def _metadata(self, conn: AsyncConnection) -> None:
        have = await conn.scalar(select(edits.c.ColP_ColPropsId).where(edits.c.ColP_ColName == "Comp_Sector"))
        if have is None:
            await conn.execute(
                edits.insert().values(ColP_Entity="Company", ColP_ColName="Comp_Sector", ColP_EntryType=21)
            )

    async def _constraints(self, conn: AsyncConnection) -> None:
        q = conn.dialect.identifier_preparer.quote
        await conn.execute(
            text(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {q('UX_Capt_Family_Code')} "
                f"ON {q('Custom_Captions')} ({q('Capt_Family')}, {q('Capt_Code')})"
            )
        )

    async def _views(self, conn: AsyncConnection) -> None:
        assert self.db is not None
        await self.db._create_views(conn, version=TARGET)

    async def _tables(self, conn: AsyncConnection) -> None:
        await conn.run_sync(_welcome_md.create_all)
        cols = await conn.run_sync(lambda c: [x["name"] for x in inspect(c).get_columns("Custom_Edits")])
        if "ColP_Required" not in cols:
            q = conn.dialect.identifier_preparer.quote
            await conn.execute(
                text(f"ALTER TABLE {q('Custom_Edits')} ADD COLUMN {q('ColP_Required')} VARCHAR(1)")
            )

    async def _indexes(self, conn: AsyncConnection) -> None:
        q = conn.dialect.identifier_preparer.quote
        assert self.db is not None
        n = self.db.tables.names
        await conn.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {q('IX_Comp_Name')} "
                f"ON {q(self.db.tables.company.name)} ({q(n.comp_name)})"
            )
        )

    # The file scripts -----------------------------------------------------------------------------------
    def _custom_pages(self) -> None:
        atomic_write_text(
            self.tree.wwwroot / "CustomPages" / "Dashboard" / "welcome.asp",
            f"<% // Sage CRM {TARGET} welcome dashboard %>\n",
        )

    def _help(self) -> None:
        atomic_write_text(
            self.tree.wwwroot / "HELP" / "EN" / "default.htm", f"<p>Sage CRM {TARGET} help</p>\n"
        )

    # The upgrade ---------------------------------------------------------------------------------------
    async def upgrade(
        self,
        *,
        to_version: str,
        with_database: bool,
        ctx: OperationContext,
        fail: bool = False,
        log_error: bool = False,
        must_fix: bool = False,
        write_log: bool = True,
    ) -> dict[str, object]:
        from_version = self.tree.version
        if to_version != TARGET:
            raise ActionFailed(f"this installer upgrades to {TARGET}, not {to_version}")
        if from_version == TARGET:
            ctx.log(f"{self.install} is already at {TARGET}: nothing to upgrade")
            return {"from_version": TARGET, "to_version": TARGET, "upgraded": False}
        if from_version not in UPGRADABLE:
            raise ActionFailed(f"the install wizard upgrades 7.2 or 7.3, not {from_version}")
        assert self.db is not None or not with_database
        if not with_database and self.db is not None:
            db_version = await self.db.schema_version()
            if db_version != TARGET:
                raise ActionFailed(f"the CRM database is at {db_version}: upgrade the database server first")
        ctx.progress(0.3, f"copying {TARGET} program files")

        def lay_down() -> None:
            self.tree.write_dll(TARGET)
            self.tree.write_webapps(TARGET)
            # The shared Services folder: the CRM services' programs are upgraded too.
            ServicesFolder(self.tree.root.parent / "Services").write(TARGET)
            if self.tree.has_replication_engine:
                self.tree.add_replication_engine(TARGET)

        await asyncio.to_thread(lay_down)
        self.registry.set_values(config_key(self.install), {"Version": TARGET})

        steps: dict[str, Callable[[], Awaitable[None]]] = {}

        async def files(fn: Callable[[], None]) -> None:
            await asyncio.to_thread(fn)

        steps["CustomPages.es"] = lambda: files(self._custom_pages)
        steps["updatehelplink.es"] = lambda: files(self._help)
        db_steps = {
            "Custom_Captions.es": self._captions,
            "update_metadata.es": self._metadata,
            "addConstraints.es": self._constraints,
            "views.es": self._views,
            "user_views.es": self._views,
            "Tables.es": self._tables,
            "Update_indexes_mssql.sql": self._indexes,
        }
        outcomes: list[ScriptOutcome] = []
        notes: list[str] = []
        completed = True
        for i, script in enumerate(UPGRADE_SCRIPTS):
            ctx.progress(0.35 + 0.55 * i / len(UPGRADE_SCRIPTS), f"running {script}")
            if script in steps:
                await steps[script]()
                outcomes.append(ScriptOutcome(script, True, "files updated"))
                continue
            # Faults fire on any server: a non-database server's wizard runs the scripts too.
            if script == _FAIL_AT and fail:
                outcomes.append(ScriptOutcome(script, False, "error 208: invalid object name 'vSentinel'"))
                notes.append(f"{script}: view vSentinel could not be upgraded")
                completed = False
                break
            if script == _FAIL_AT and log_error:
                outcomes.append(
                    ScriptOutcome(script, False, "error 4104: the view vCompany could not be bound")
                )
                if with_database:
                    await self._db(db_steps[script])
                continue
            if not with_database:
                outcomes.append(
                    ScriptOutcome(script, True, "database already upgraded by the database server")
                )
                continue
            await self._db(db_steps[script])
            outcomes.append(ScriptOutcome(script, True, "completed"))
        if must_fix:
            notes.append(
                "Tables.es: column Comp_Sector has a _dta_stat_ statistic; drop it and run the script again"
            )
        if completed and with_database:
            assert self.db is not None
            await self.db.set_state("version", TARGET)
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        document = render_upgrade_log(
            install_name=self.install,
            from_version=str(from_version),
            to_version=TARGET,
            outcomes=outcomes,
            must_fix=notes,
            completed=completed,
            when=when,
        )

        def write_logs() -> None:
            if write_log:
                atomic_write_text(self.tree.upgrade_log, document)
            for o in outcomes:
                suffix = ".html" if o.name.endswith(".es") else ".log"
                name = ("*" if not o.success else "") + o.name + suffix
                atomic_write_text(self.tree.setup / "logs" / name, f"{o.name}: {o.message}\n")

        await asyncio.to_thread(write_logs)
        if not completed:
            raise ActionFailed(f"the upgrade stopped at {outcomes[-1].name}: see Setup/upgradelog.html")
        return {
            "from_version": from_version,
            "to_version": TARGET,
            "upgraded": True,
            "database_upgraded": with_database,
            "scripts": [o.name for o in outcomes],
        }


SERVICES = ("indexer", "escalation", "email_manager", "integration", "quickfind")
_ROLE_SERVICES = {Role.INDEXER: "indexer", Role.ESCALATION: "escalation", Role.EMAIL_MANAGER: "email_manager"}


def new_install(
    *, tree: InstallTree, registry: SandboxRegistry, node: str, version: str, roles: list[str]
) -> dict[str, Any]:
    """The wizard's "New Install" on one server: the program files (a Replication Engine on the
    node that holds it), the registry keys, the CRM services its roles name, IIS and Tomcat
    running. Returns the server's initial state."""
    install = tree.install
    replication = Role.REPLICATION_ENGINE.value in roles
    tree.create(version=version, replication_engine=replication)
    ServicesFolder(tree.root.parent / "Services").write(version)
    services = {name: "not_installed" for name in SERVICES}
    for role, name in _ROLE_SERVICES.items():
        if role.value in roles:
            services[name] = "running"
    registry.save(
        {
            config_key(install): {
                "Version": version,
                "InstallName": install,
                "RootPath": str(tree.root),
                "ServerName": node,
                "DefaultDatabase": install,
            },
            mappings_key(install): {"Path": f"/{install.lower()}", "Install": install},
        }
    )
    return {
        "roles": list(roles),
        "web": "running",
        "tomcat": "running",
        "services": services,
        "iis_started_at": datetime.now(UTC).isoformat(),
        "exchange_integration": replication,
        "website_path": f"{install}/WWWRoot",
        # Where Sage's setup registered the Tomcat service (its CATALINA_BASE): the install
        # folder's own Tomcat, whatever the website's physical path says later.
        "tomcat_home": f"{install}/tomcat",
        "dll_registered": f"{install}/WWWRoot/eware.dll",
        "registrations": {},
        "license_hash": None,
    }
