"""Sage CRM's setup as InstallShield runs it: replayed from a recorded response file, or run by a
person (``windows_installer``).

**Response file** (``response_file``). Sage's ``Setup.exe`` is an InstallShield wizard; unattended,
it replays answers recorded once by the administrator on a test server (``Setup.exe /r
/f1"C:\\CRMSetup\\responses\\upgrade-2017 R1.iss"``, docs/windows.md step by step) with ``/s`` and
reports its outcome as ``ResultCode`` in the ``[ResponseResult]`` section of the setup log
(``/f2``) — not as its exit code. In the recorded file the administrator replaces the license key
and the SQL password with ``{{license_key}}`` and ``{{db_password}}``; for each run the agent writes
a copy with the values filled in under its own work folder, readable only by the service account
and the Administrators (``icacls``), runs ``Setup.exe /s /f1<copy> /f2<log>``, and deletes the copy
afterwards whatever happened — the key and the password are never on a command line (process
creation is logged: event 4688). Success is ``ResultCode=0`` *and*, for an upgrade, an
``upgradelog.html`` written after this run started that names the target version (a stale log of
the previous upgrade reads as success otherwise) *and* the registry's Version being the target.

**Manual** (``manual``). The step waits (the record reads ``awaiting: operator``) for a person to
run the wizard by hand with the choices the guide gives, listed in the log, and to confirm
(``POST /v1/operations/{op_id}/confirm``); then it is verified the same way.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import PureWindowsPath
from typing import Any

from config.secrets import register_secret, secret_hash
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.files import Registry
from node_agent.drivers.windows.host import WindowsHost
from node_agent.drivers.wizard import wizard_choices
from node_agent.protocol import RunInstallerParams

#: InstallShield's ResultCode values (the setup log's ``[ResponseResult]``).
RESULT_CODES = {
    0: "success",
    -1: "general error",
    -2: "invalid mode",
    -3: "required data not found in the response file",
    -4: "not enough memory available",
    -5: "file does not exist",
    -6: "cannot write to the response file",
    -7: "unable to write to the log file",
    -8: "invalid path to the response file",
    -9: "not a valid list type (string or number)",
    -10: "data type is invalid",
    -11: "unknown error during setup",
    -12: "dialog boxes are out of order",
    -51: "cannot create the specified folder",
    -52: "cannot access the specified file or folder",
    -53: "invalid option selected",
}
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_RESULT = re.compile(r"^\s*ResultCode\s*=\s*(-?\d+)\s*$", re.M | re.I)


def result_code(setup_log: str) -> int | None:
    """``ResultCode`` from the ``[ResponseResult]`` section of an InstallShield setup log."""
    section = re.split(r"^\s*\[ResponseResult\]\s*$", setup_log, maxsplit=1, flags=re.M | re.I)
    if len(section) < 2:
        return None
    m = _RESULT.search(section[1].split("[", 1)[0])
    return int(m.group(1)) if m else None


def fill_response_file(template: str, values: dict[str, str], *, required: list[str]) -> str:
    names = set(PLACEHOLDER.findall(template))
    unknown = sorted(names - set(values))
    if unknown:
        raise ActionFailed(f"the response file has unknown placeholders: {', '.join(unknown)}")
    lacking = [r for r in required if r not in names]
    if lacking:
        raise ActionFailed(
            "the response file does not take "
            + ", ".join("{{" + r + "}}" for r in lacking)
            + ": replace the recorded value with the placeholder (docs/windows.md)"
        )
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


class Installer:
    def __init__(
        self,
        host: WindowsHost,
        registry: Registry,
        *,
        how: str,
        setup_exe: str,
        responses: str,
        work_dir: PureWindowsPath,
        install_dir: PureWindowsPath,
        install: str,
        service_account: str,
        backup_root: PureWindowsPath | None,
        timeout: int,
    ) -> None:
        self.host = host
        self.registry = registry
        self.how = how
        self.setup_exe = setup_exe
        self.responses = PureWindowsPath(responses)
        self.work_dir = work_dir
        self.install_dir = install_dir
        self.install = install
        self.account = service_account
        self.backup_root = backup_root
        self.timeout = timeout

    @property
    def upgrade_log(self) -> PureWindowsPath:
        return self.install_dir / "Setup" / "upgradelog.html"

    def response_template(self, params: RunInstallerParams) -> PureWindowsPath:
        return self.responses / f"{params.mode}-{params.version}.iss"

    def _values(self, params: RunInstallerParams) -> dict[str, str]:
        key = params.license_key.get_secret_value()
        register_secret(key)
        db = params.database
        if db is not None:
            register_secret(db.password)
        location = ""
        if params.backup_location and self.backup_root is not None:
            location = str(self.backup_root.joinpath(*params.backup_location.split("/")))
        return {
            "license_key": key,
            "install": self.install,
            "db_server": db.server if db else "",
            "db_port": str(db.port) if db else "",
            "db_user": db.user if db else "",
            "db_password": db.password.get_secret_value() if db else "",
            "backup_location": location,
        }

    async def run(self, ctx: OperationContext, params: RunInstallerParams) -> dict[str, Any]:
        started = datetime.now(UTC)
        if self.how == "manual":
            out = await self._manual(ctx, params)
        else:
            out = await self._replay(ctx, params)
        verified = await self.verify(ctx, params, started=started)
        return {
            "mode": params.mode,
            "installer": self.how,
            "started_at": started.isoformat(),
            "license_hash": secret_hash(params.license_key.get_secret_value()),
            **out,
            **verified,
        }

    async def _replay(self, ctx: OperationContext, params: RunInstallerParams) -> dict[str, Any]:
        if " " in str(self.work_dir):
            raise ActionFailed(
                f"the installer work folder {self.work_dir} must hold no space (Setup.exe /f1 /f2)"
            )
        template = self.response_template(params)
        if not await self.host.files.exists(template):
            raise ActionFailed(
                f'no recorded response file {template}: record one with Setup.exe /r /f1"{template}" '
                "on a test server (docs/windows.md)"
            )
        required = ["license_key"] + (["db_password"] if params.database is not None else [])
        body = fill_response_file(
            await self.host.read_text(ctx, template), self._values(params), required=required
        )
        name = ctx.op_id.replace(":", "-")
        iss, log = self.work_dir / f"{name}.iss", self.work_dir / f"{name}.log"
        await self.host.mkdir(ctx, self.work_dir)
        await self.host.remove(ctx, log)
        try:
            await self.host.write_text(ctx, iss, body, what="response file with the key and password")
            await self.host.run(
                ctx,
                [
                    "icacls",
                    str(iss),
                    "/inheritance:r",
                    "/grant:r",
                    f"{self.account}:(F)",
                    "*S-1-5-32-544:(F)",
                ],
            )
            ctx.progress(0.2, "running Sage CRM setup (InstallShield, silent)")
            r = await self.host.run(
                ctx,
                [self.setup_exe, "/s", f"/f1{iss}", f"/f2{log}"],
                ok=range(-(2**31), 2**31),
                timeout=self.timeout,
            )
        finally:
            await self.host.remove(ctx, iss)
        if not await self.host.files.exists(log):
            raise ActionFailed(f"Setup.exe (exit code {r.returncode}) wrote no setup log at {log}")
        code = result_code(await self.host.read_text(ctx, log))
        if code is None:
            raise ActionFailed(f"the setup log {log} has no [ResponseResult] ResultCode")
        if code != 0:
            raise ActionFailed(
                f"Sage CRM setup failed: ResultCode {code} ({RESULT_CODES.get(code, 'unknown')})"
            )
        return {"result_code": code, "setup_log": str(log), "exit_code": r.returncode}

    async def _manual(self, ctx: OperationContext, params: RunInstallerParams) -> dict[str, Any]:
        location = self._values(params)["backup_location"] if params.backup_location else None
        note = await ctx.wait_for_operator(
            wizard_choices(params, setup_exe=self.setup_exe, install=self.install, backup_folder=location)
        )
        return {"operator_note": note[:500]}

    async def verify(
        self, ctx: OperationContext, params: RunInstallerParams, *, started: datetime
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if params.mode == "upgrade":
            out["upgrade_log_at"] = (
                await self.fresh_upgrade_log(ctx, since=started, version=params.version)
            ).isoformat()
        version = await self.registry.version(ctx)
        if version != params.version:
            raise ActionFailed(f"after setup the registry's Version is {version!r}, not {params.version!r}")
        out["version"] = version
        return out

    async def fresh_upgrade_log(
        self, ctx: OperationContext, *, since: datetime, version: str | None
    ) -> datetime:
        info = await self.host.files.info(self.upgrade_log)
        if info is None:
            raise ActionFailed(f"no upgrade log at {self.upgrade_log}")
        # File times have a 2-second resolution on FAT and are rounded on copy.
        if info.modified < since - timedelta(seconds=2):
            raise ActionFailed(
                f"{self.upgrade_log} was written {info.modified:%Y-%m-%d %H:%M:%S} UTC, before this "
                "installer run: it is a stale log of an earlier upgrade"
            )
        if version is not None and version not in await self.host.read_text(ctx, self.upgrade_log):
            raise ActionFailed(f"{self.upgrade_log} does not name version {version}")
        return info.modified
