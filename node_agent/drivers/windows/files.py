"""Program files, the registry and eware.dll's registration, as Windows keeps them.

Program files (the guide's "Backing up program files manually", the install folder with Tomcat,
and the shared ``Sage\\CRM\\Services`` folder beside it) are copied with ``robocopy``, which keeps
NTFS permissions, owner and timestamps (``/COPY:DATSO /DCOPY:DAT``); its exit codes below 8 are
success (1 files copied, 2 extra files, 4 mismatches), 8 and above are failures. Each backup is
checksummed afterwards (every file's relative path and content) and the manifest kept beside it.

Restore (the guide's "Restoring a Live Environment"), ``windows_restore_by``:

- ``rename`` (default): ``CRM`` → ``CRM_failed``, the backup copied to ``CRM``, ``Services`` the
  same way: Tomcat's service, the CRM services and the registry keep pointing at valid paths;
- ``redirect``: the guide's way — the backup copied to ``CRM_backup``, the website redirected to
  it, and its eware.dll added to IIS's ``isapiCgiRestriction`` list (else IIS answers 404.2).
  The website is all the guide redirects: the Tomcat service still runs from ``CRM\tomcat`` and the
  CRM services from ``Services``, so Tomcat's ``webapps`` is mirrored back from the backup
  (``robocopy … /MIR``: what the upgrade added goes too) and ``Services`` put back as with
  ``rename``.

Registry (``HKLM\\SOFTWARE\\eWare\\Config\\/<install>`` and ``…\\Mappings\\/<install>``, in the
32-bit view: Sage CRM is a 32-bit program): ``reg export … /y /reg:32``; restore deletes each key
(``reg delete … /f /reg:32``) before ``reg import`` — an import merges, so values the upgrade added
would otherwise survive. eware.dll is registered with ``%SystemRoot%\\SysWOW64\\regsvr32.exe /s``.
"""

from __future__ import annotations

import json
from pathlib import PureWindowsPath
from typing import Any

from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.host import WindowsHost

ROBOCOPY_FLAGS = ["/E", "/COPY:DATSO", "/DCOPY:DAT", "/R:2", "/W:5", "/NP", "/NFL", "/NDL"]
ROBOCOPY_OK = range(8)
MANIFEST_SUFFIX = ".manifest.json"


def manifest_file(folder: PureWindowsPath) -> PureWindowsPath:
    return folder.with_name(folder.name + MANIFEST_SUFFIX)


class ProgramFiles:
    def __init__(self, host: WindowsHost, *, programs_root: PureWindowsPath, install: str) -> None:
        self.host = host
        self.root = programs_root
        self.install = install

    @property
    def install_dir(self) -> PureWindowsPath:
        return self.root / self.install

    @property
    def services_dir(self) -> PureWindowsPath:
        return self.root / "Services"

    async def robocopy(self, ctx: OperationContext, source: PureWindowsPath, target: PureWindowsPath) -> int:
        r = await self.host.run(
            ctx, ["robocopy", str(source), str(target), *ROBOCOPY_FLAGS], ok=ROBOCOPY_OK, timeout=4 * 3600
        )
        return r.returncode

    async def backup(self, ctx: OperationContext, dest: PureWindowsPath) -> dict[str, Any]:
        """``dest\\<install>`` and ``dest\\Services``; returns the manifest of both."""
        if not await self.host.files.is_dir(self.install_dir):
            raise ActionFailed(f"no Sage CRM install at {self.install_dir}")
        await self.robocopy(ctx, self.install_dir, dest / self.install)
        folders = [self.install]
        if await self.host.files.is_dir(self.services_dir):
            await self.robocopy(ctx, self.services_dir, dest / "Services")
            folders.append("Services")
        manifest = await self.host.manifest(ctx, dest)
        if not manifest.get("files"):
            raise ActionFailed(f"robocopy reported success but {dest} holds no file")
        await self.host.write_text(
            ctx, manifest_file(dest), json.dumps(manifest), what="the backup's checksums"
        )
        return {**manifest, "folders": folders}

    async def verify(self, ctx: OperationContext, source: PureWindowsPath) -> dict[str, Any]:
        try:
            kept = json.loads(await self.host.read_text(ctx, manifest_file(source)))
        except (ActionFailed, ValueError) as exc:
            raise ActionFailed(
                f"{source} has no manifest: not a program files backup made by crmcluster"
            ) from exc
        now = await self.host.manifest(ctx, source)
        if now.get("sha256") != kept.get("sha256") or now.get("files") != kept.get("files"):
            raise ActionFailed(f"{source}: the backup is damaged (its checksum no longer matches)")
        if not await self.host.files.exists(source / self.install / "WWWRoot" / "eware.dll"):
            raise ActionFailed(
                f"{source} is not a program files backup (no {self.install}\\WWWRoot\\eware.dll)"
            )
        return dict(kept)

    async def _aside(self, ctx: OperationContext, folder: PureWindowsPath) -> PureWindowsPath | None:
        """Rename ``folder`` to ``<folder>_failed`` (a fresh name when that is taken)."""
        if not await self.host.files.exists(folder):
            return None
        target = folder.with_name(folder.name + "_failed")
        n = 2
        while await self.host.files.exists(target):
            target = folder.with_name(f"{folder.name}_failed{n}")
            n += 1
        await self.host.rename(ctx, folder, target)
        return target

    async def restore_by_rename(self, ctx: OperationContext, source: PureWindowsPath) -> dict[str, Any]:
        manifest = await self.verify(ctx, source)
        failed = await self._aside(ctx, self.install_dir)
        await self.robocopy(ctx, source / self.install, self.install_dir)
        out: dict[str, Any] = {
            "path": self.install,
            "website_path": f"{self.install}/WWWRoot",
            "failed_copy": failed.name if failed else None,
            "tomcat_webapps": f"{self.install}/tomcat/webapps",  # back with the folder
        }
        if await self.host.files.is_dir(source / "Services"):
            services_failed = await self._aside(ctx, self.services_dir)
            await self.robocopy(ctx, source / "Services", self.services_dir)
            out["services_failed_copy"] = services_failed.name if services_failed else None
            out["services_folder"] = "Services"
        return {**out, "bytes": manifest.get("bytes"), "files": manifest.get("files")}

    async def restore_to_backup_folder(
        self, ctx: OperationContext, source: PureWindowsPath
    ) -> PureWindowsPath:
        """The guide's ``<install>_backup`` folder (the website is redirected by the caller)."""
        await self.verify(ctx, source)
        folder = self.root / f"{self.install}_backup"
        await self.robocopy(ctx, source / self.install, folder)
        webapps = self.install_dir / "tomcat" / "webapps"
        await self.host.run(
            ctx,
            [
                "robocopy",
                str(source / self.install / "tomcat" / "webapps"),
                str(webapps),
                "/MIR",
                *ROBOCOPY_FLAGS[1:],
            ],
            ok=ROBOCOPY_OK,
            timeout=4 * 3600,
        )
        if await self.host.files.is_dir(source / "Services"):
            await self._aside(ctx, self.services_dir)
            await self.robocopy(ctx, source / "Services", self.services_dir)
        return folder


class Registry:
    def __init__(self, host: WindowsHost, *, install: str, view: str) -> None:
        self.host = host
        self.install = install
        self.view = f"/reg:{view}"

    @property
    def config_key(self) -> str:
        return f"HKLM\\SOFTWARE\\eWare\\Config\\/{self.install}"

    @property
    def mappings_key(self) -> str:
        return f"HKLM\\SOFTWARE\\eWare\\Mappings\\/{self.install}"

    def exports(self) -> list[tuple[str, str]]:
        return [
            (self.config_key, f"Config_{self.install}.reg"),
            (self.mappings_key, f"Mappings_{self.install}.reg"),
        ]

    async def value(self, ctx: OperationContext | None, key: str, name: str) -> str | None:
        import re

        r = await self.host.query(ctx, ["reg.exe", "query", key, "/v", name, self.view])
        m = re.search(rf"{re.escape(name)}\s+REG_\w+\s+(.+)", r.output)
        return m.group(1).strip() if r.returncode == 0 and m else None

    async def version(self, ctx: OperationContext | None = None) -> str | None:
        return await self.value(ctx, self.config_key, "Version")

    async def backup(self, ctx: OperationContext, dest: PureWindowsPath) -> list[str]:
        await self.host.mkdir(ctx, dest)
        for key, fname in self.exports():
            await self.host.run(ctx, ["reg.exe", "export", key, str(dest / fname), "/y", self.view])
        return [fname for _, fname in self.exports()]

    async def restore(self, ctx: OperationContext, source: PureWindowsPath) -> tuple[list[str], list[str]]:
        present = {n.lower() for n in await self.host.files.listdir(source)}
        todo = [(key, fname) for key, fname in self.exports() if fname.lower() in present]
        if not todo:
            raise ActionFailed(f"{source} holds no registry export of {self.install}")
        for key, fname in todo:
            # 1 = the key is already gone: fine, the import recreates it.
            await self.host.run(ctx, ["reg.exe", "delete", key, "/f", self.view], ok=(0, 1))
            await self.host.run(ctx, ["reg.exe", "import", str(source / fname), self.view])
        return [key for key, _ in todo], [fname for _, fname in todo]


async def register_dll(
    host: WindowsHost, ctx: OperationContext, *, system_root: str, dll: PureWindowsPath
) -> str:
    """``%SystemRoot%\\SysWOW64\\regsvr32.exe /s <dll>``: eware.dll is 32-bit."""
    if not await host.files.exists(dll):
        raise ActionFailed(f"regsvr32: {dll} does not exist")
    regsvr32 = PureWindowsPath(system_root) / "SysWOW64" / "regsvr32.exe"
    await host.run(ctx, [str(regsvr32), "/s", str(dll)])
    return str(dll)
