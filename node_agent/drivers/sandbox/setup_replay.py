"""The sandbox's Sage CRM setup as InstallShield runs it unattended, so the sandbox is as strict
as the real one: ``Setup.exe /s /f1<response file> /f2<setup log>``.

The administrator's recorded response files live in ``<sandbox>/CRMSetup/responses/<mode>-
<version>.iss`` (bootstrapped with the ``{{license_key}}`` and ``{{db_password}}`` placeholders,
as docs/windows.md tells an administrator to edit them). A run fills a copy in
``<sandbox>/agent/installer/``, "runs setup", writes the setup log with its ``[ResponseResult]
ResultCode``, deletes the copy, and the outcome is read back from the log — exactly what the
windows driver does (:mod:`node_agent.drivers.windows.installer`). Faults: ``response``
(``ResultCode=-3``: the response file lacks data the dialogs need).
"""

from __future__ import annotations

from pathlib import Path

from config.secrets import register_secret
from config.vocabulary import KNOWN_VERSIONS
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.installer import RESULT_CODES, fill_response_file, result_code
from node_agent.journal import atomic_write_text
from node_agent.protocol import RunInstallerParams


class SandboxSetup:
    def __init__(self, base: Path) -> None:
        self.responses = base / "CRMSetup" / "responses"
        self.work = base / "agent" / "installer"

    def record(self) -> None:
        """The response files an administrator recorded once (kept when they exist)."""
        for mode in ("upgrade", "add_node"):
            for version in KNOWN_VERSIONS:
                path = self.responses / f"{mode}-{version}.iss"
                if not path.exists():
                    atomic_write_text(
                        path,
                        "[InstallShield Silent]\nVersion=v7.00\nFile=Response File\n"
                        "[{sandbox}-SdLicense-0]\nszLicenseKey={{license_key}}\n"
                        + (
                            "[{sandbox}-SQLLogin-0]\nszPassword={{db_password}}\n"
                            if mode == "upgrade"
                            else ""
                        ),
                    )

    def replay(self, ctx: OperationContext, params: RunInstallerParams, *, fault_code: int = 0) -> int:
        """Replay the recorded answers; returns the setup log's ResultCode."""
        template = self.responses / f"{params.mode}-{params.version}.iss"
        if not template.is_file():
            raise ActionFailed(f"no recorded response file {template.name}: record one with Setup.exe /r /f1")
        key = params.license_key.get_secret_value()
        register_secret(key)
        values = {
            "license_key": key,
            "db_password": params.database.password.get_secret_value() if params.database else "",
            "db_server": params.database.server if params.database else "",
            "db_port": str(params.database.port) if params.database else "",
            "db_user": params.database.user if params.database else "",
            "backup_location": params.backup_location or "",
            "install": "",
        }
        required = ["license_key"] + (["db_password"] if params.database is not None else [])
        body = fill_response_file(template.read_text(encoding="utf-8"), values, required=required)
        name = ctx.op_id.replace(":", "-")
        iss, log = self.work / f"{name}.iss", self.work / f"{name}.log"
        log.unlink(missing_ok=True)
        try:
            atomic_write_text(iss, body)
            ctx.log(f"Setup.exe /s /f1{iss.name} /f2{log.name}")
            atomic_write_text(
                log,
                "[InstallShield Silent]\nVersion=v7.00\nFile=Log File\n"
                f"[ResponseResult]\nResultCode={fault_code}\n",
            )
        finally:
            iss.unlink(missing_ok=True)
        code = result_code(log.read_text(encoding="utf-8"))
        if code is None:
            raise ActionFailed(f"the setup log {log.name} has no [ResponseResult] ResultCode")
        if code != 0:
            raise ActionFailed(
                f"Sage CRM setup failed: ResultCode {code} ({RESULT_CODES.get(code, 'unknown')})"
            )
        return code
