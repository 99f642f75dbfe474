r"""The sandbox's manual backups and the guide's "Restoring a Live Environment": program files,
registry, database and customised views backed up under the backup root; restored from there —
the program files into the guide's ``<install>_backup`` folder with the website redirected to it,
and (DESIGN.md: "Tomcat's webapps and the CRM services with it") Tomcat's web apps put back in the
folder the Tomcat service runs from and the shared ``Services`` folder put back, which the guide's
website redirect alone leaves on the new version; the registry imported, the database put back
with every session dropped, eware.dll re-registered.

A program files backup holds, as on Windows, ``<install>\`` (the whole install folder, Tomcat
included) and ``Services\`` (the CRM services' programs, shared by every install), each with its
manifest.

Every backup answers a :class:`~node_agent.protocol.BackupResult` (``path`` relative to the backup
root, size, sha256 of what was written, read back); ``path`` is what the matching restore takes as
``source``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node_agent.backup_files import copy_folder, mirror_folder, tree_manifest, verify_folder
from node_agent.drivers.base import ActionFailed, OperationContext, resolve_under
from node_agent.drivers.sandbox import database_backup
from node_agent.drivers.sandbox.install_tree import InstallTree
from node_agent.drivers.sandbox.node import SandboxNode
from node_agent.drivers.sandbox.registry import config_key, mappings_key
from node_agent.journal import atomic_write_text
from node_agent.protocol import BackupParams, DllPathParams, RestoreParams

RUNNING = "running"


def _done() -> dict[str, Any]:
    """What every backup adds to its manifest: read back (the manifest hashes the copy written),
    and when it was finished."""
    return {"verified": True, "finished_at": datetime.now(UTC).isoformat()}


class SandboxBackups:
    """The backup, restore, ``register_dll`` and ``redirect_website`` actions of one sandbox node."""

    def __init__(self, host: SandboxNode) -> None:
        self.host = host

    # Paths ---------------------------------------------------------------------------------------------
    def _destination(self, given: str | None, kind: str, ctx: OperationContext) -> tuple[Path, str]:
        rel = given or f"{kind}/{ctx.op_id.replace(':', '-')}"
        path = resolve_under(self.host.backup_root, rel)
        return path, path.relative_to(self.host.backup_root.resolve()).as_posix()

    def _source(self, rel: str) -> Path:
        path = resolve_under(self.host.backup_root, rel)
        if not path.exists():
            raise ActionFailed(f"no backup at {rel}")
        return path

    # Backups ---------------------------------------------------------------------------------------------
    async def backup_program_files(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "program_files", ctx)
        tree = self.host.tree
        services = self.host.services_folder
        ctx.log(f"copying {tree.root.name} (Tomcat included) and Services to {rel}")

        def copy() -> dict[str, Any]:
            tree.copy_to(dest / self.host.install_name)
            if services.exists():
                copy_folder(services.root, dest / "Services")
            return tree_manifest(dest)

        manifest = await asyncio.to_thread(copy)
        return {"path": rel, "version": tree.version, **manifest, **_done()}

    async def backup_registry(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "registry", ctx)
        exports = [
            (config_key(self.host.install_name), f"Config_{self.host.install_name}.reg"),
            (mappings_key(self.host.install_name), f"Mappings_{self.host.install_name}.reg"),
        ]
        for key, fname in exports:
            ctx.log(f"reg export {key} {fname}")

        def export() -> dict[str, Any]:
            dest.mkdir(parents=True, exist_ok=True)
            for key, fname in exports:
                atomic_write_text(dest / fname, self.host.registry.export(key))
            return tree_manifest(dest)

        manifest = await asyncio.to_thread(export)
        return {"path": rel, **manifest, "exports": [fname for _, fname in exports], **_done()}

    async def backup_database(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "database", ctx)
        ctx.log(f"xp_create_subdir {rel}")  # SQL Server creates no folders: the backup's first
        await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
        manifest = await database_backup.backup_database(self.host.settings.crm_url, dest, ctx)
        return {"path": rel, "schema_version": await self.host.db.schema_version(), **manifest, **_done()}

    async def backup_views(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "views", ctx)
        views = await self.host.db.view_definitions()
        body = "".join(f"-- {name}\n{sql.strip()};\n\n" for name, sql in views.items())

        def write() -> dict[str, Any]:
            atomic_write_text(dest / "views.sql", body)
            return tree_manifest(dest)

        return {"path": rel, "views": sorted(views), **await asyncio.to_thread(write), **_done()}

    # Restores --------------------------------------------------------------------------------------------
    async def restore_program_files(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        source = self._source(params.source)
        install = self.host.install_name
        backup_tree = InstallTree(source / install, install)
        services_backup = source / "Services"
        if not backup_tree.exists():
            raise ActionFailed(
                f"{params.source} is not a program files backup (no {install}/WWWRoot/eware.dll)"
            )
        try:
            for kept in (backup_tree.root, services_backup):
                if kept.exists():
                    await asyncio.to_thread(verify_folder, kept)
        except ValueError as exc:
            raise ActionFailed(f"{params.source}: the backup is damaged ({exc})") from exc
        # Tomcat and the CRM services hold their files while they run (as on Windows).
        if self.host.state.get("tomcat") == RUNNING:
            raise ActionFailed(
                f"the process cannot access the file because it is being used: {install}Tomcat7 runs "
                "from its web apps; stop Tomcat first"
            )
        running = sorted(n for n, st in self.host.state.get("services", {}).items() if st == RUNNING)
        if running and services_backup.exists():
            raise ActionFailed(
                "the process cannot access the file because it is being used: the CRM services "
                f"{', '.join(running)} run from Services; stop them first"
            )
        folder = f"{install}_backup"
        ctx.log(f"copying {params.source}\\{install} to {folder}")
        await asyncio.to_thread(backup_tree.copy_to, self.host.programs_root / folder)
        self.host.update_state(website_path=f"{folder}/WWWRoot")
        ctx.log(f"website physical path -> {folder}\\WWWRoot")
        # The guide redirects the website only; Tomcat's service still runs from its own folder
        # and the services from the shared one: both go back too.
        webapps = self.host.tomcat_home / "webapps"
        ctx.log(f"Tomcat's web apps put back in {webapps.relative_to(self.host.programs_root)}")
        await asyncio.to_thread(mirror_folder, backup_tree.webapps, webapps)
        out: dict[str, Any] = {
            "path": folder,
            "website_path": f"{folder}/WWWRoot",
            "version": self.host.version,
            "tomcat_webapps": webapps.relative_to(self.host.programs_root).as_posix(),
            "tomcat_version": self.host.tomcat_version,
        }
        if services_backup.exists():
            ctx.log("Services: put back from the backup")
            await asyncio.to_thread(mirror_folder, services_backup, self.host.services_folder.root)
            out["services_folder"] = "Services"
        out["service_versions"] = self.host.service_versions()
        return out

    async def restore_registry(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        source = self._source(params.source)
        files = sorted(source.glob("*.reg"))
        if not files:
            raise ActionFailed(f"{params.source} holds no .reg file")
        for f in files:
            ctx.log(f"reg import {f.name}")

        def import_all() -> list[str]:
            keys: list[str] = []
            for f in files:
                keys += self.host.registry.import_reg(f.read_text(encoding="utf-8"))
            return keys

        return {"imported": [f.name for f in files], "keys": await asyncio.to_thread(import_all)}

    async def restore_database(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        source = self._source(params.source)
        await database_backup.verify_backup(source)
        # SET SINGLE_USER WITH ROLLBACK IMMEDIATE rolls idle sessions back, but a program that
        # still runs (eware.dll, Tomcat's pool, a CRM service) takes the slot again at once: as on
        # SQL Server, the restore fails (3101) until every server has stopped them.
        await self.host.refresh_sessions()
        held = await self.host.db.sessions()
        if held:
            who = "; ".join(f"{host}: {', '.join(sorted(p))}" for host, p in sorted(held.items()))
            raise ActionFailed(
                "Exclusive access could not be obtained because the database is in use (error 3101): " + who
            )
        ctx.log("exclusive access: every other session is rolled back")
        await self.host.db.drop_all_sessions()
        await self.host.engine.dispose()
        manifest = await database_backup.restore_database(self.host.settings.crm_url, source, ctx)
        await self.host.engine.dispose()
        await self.host.db.drop_all_sessions()
        await self.host.refresh_sessions()
        return {
            "restored_from": params.source,
            "schema_version": await self.host.db.schema_version(),
            **manifest,
        }

    # Registration and the website -----------------------------------------------------------------------
    def _programs_path(self, rel: str) -> Path:
        return resolve_under(self.host.programs_root, rel)

    async def register_dll(self, params: DllPathParams, ctx: OperationContext) -> dict[str, Any]:
        rel = params.path or f"{self.host.state.get('website_path')}/eware.dll"
        path = self._programs_path(rel)
        if path.is_dir():
            path = path / "WWWRoot" / "eware.dll" if (path / "WWWRoot").is_dir() else path / "eware.dll"
        if not path.is_file():
            raise ActionFailed(f"regsvr32: the module {rel} failed to load: no such file")
        registered = path.relative_to(self.host.programs_root.resolve()).as_posix()
        ctx.log(f"regsvr32 /s {registered}")
        self.host.update_state(dll_registered=registered)
        return {"registered": registered}

    async def redirect_website(self, params: DllPathParams, ctx: OperationContext) -> dict[str, Any]:
        rel = params.path or f"{self.host.install_name}/WWWRoot"
        path = self._programs_path(rel)
        if (path / "WWWRoot").is_dir():
            path = path / "WWWRoot"
        if not (path / "eware.dll").is_file():
            raise ActionFailed(f"{rel} is not a Sage CRM website (no eware.dll)")
        website = path.relative_to(self.host.programs_root.resolve()).as_posix()
        self.host.update_state(website_path=website)
        ctx.log(f"website physical path -> {website}")
        return {"website_path": website, "version": self.host.version}
