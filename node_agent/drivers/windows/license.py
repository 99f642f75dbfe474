"""The guide's "Updating the license key" on a real server: the License Key Update application
(``<programs>\\<install>\\License Update\\licensekeyupdate.exe``).

The application is a wizard with no silent mode, so the step waits for a person, as the manual
installer does: the agent checks the program is there, then asks (``awaiting``) for someone to run
it on this server, enter the new key (its hint is shown, never the key), review the differences it
lists and complete it, then confirm (``POST /v1/operations/{op_id}/confirm``). The agent then keeps
the key's hash and hint in ``<agent data>\\license.json``: what ``license_details`` reports.

Sage decodes its keys itself (the wizard lists the differences; *License Key Details* shows the
users and options): the windows driver cannot read a key's users or features, and says so
(``users``/``features`` None) rather than guess. The update registers nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import PureWindowsPath
from typing import Any

from config.secrets import register_secret, secret_hash
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.host import ReadOnlyRefused, WindowsHost
from node_agent.protocol import LicenseDetailsParams, LicenseParams

NOT_READABLE = (
    "not readable here: Sage decodes its keys (the License Key Update application lists the differences)"
)


def key_hint(key: str) -> str:
    return "…" + key.strip()[-4:]


class WindowsLicense:
    def __init__(
        self, host: WindowsHost, *, install_dir: PureWindowsPath, state_dir: PureWindowsPath
    ) -> None:
        self.host = host
        self.exe = install_dir / "License Update" / "licensekeyupdate.exe"
        self.kept = state_dir / "license.json"

    async def _installed(self, ctx: OperationContext) -> dict[str, Any]:
        if not await self.host.files.exists(self.kept):
            return {
                "checked": "the installed key is not known to crmcluster (none applied through it); "
                + NOT_READABLE
            }
        data = json.loads(await self.host.read_text(ctx, self.kept))
        return {
            "key_hash": data.get("key_hash"),
            "key_hint": data.get("key_hint"),
            "checked": f"as applied through crmcluster on {data.get('applied_at')}; " + NOT_READABLE,
        }

    async def license_details(self, params: LicenseDetailsParams, ctx: OperationContext) -> dict[str, Any]:
        if params.license_key is None:
            return await self._installed(ctx)
        key = params.license_key.get_secret_value()
        register_secret(key)
        return {"key_hash": secret_hash(key), "key_hint": key_hint(key), "checked": NOT_READABLE}

    async def update_license_key(self, params: LicenseParams, ctx: OperationContext) -> dict[str, Any]:
        key = params.license_key.get_secret_value()
        register_secret(key)
        if self.host.mode == "read_only":
            ctx.record(f"(not run: read-only mode) {self.exe}")
            raise ReadOnlyRefused(f"read-only mode: updating the license key changes the server ({self.exe})")
        if not await self.host.files.exists(self.exe):
            raise ActionFailed(f"the License Key Update application is not at {self.exe}")
        before = await self._installed(ctx)
        hint = key_hint(key)
        ctx.record(f"{self.exe} (run by a person: the new key ending {hint})")
        note = await ctx.wait_for_operator(
            f"on this server run {self.exe}, enter the new license key (it ends {hint}), review the "
            "differences it lists, complete the wizard; then confirm this step"
        )
        applied = {
            "key_hash": secret_hash(key),
            "key_hint": hint,
            "applied_at": datetime.now(UTC).isoformat(),
        }
        await self.host.write_text(ctx, self.kept, json.dumps(applied), what="the key's hash and hint")
        after = {"key_hash": applied["key_hash"], "key_hint": hint, "checked": NOT_READABLE}
        return {
            "before": before,
            "after": after,
            "how": "License Key Update application, run by a person (it has no silent mode)",
            "operator_note": note[:500],
            "registered": False,
        }
