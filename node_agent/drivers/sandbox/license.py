"""The sandbox's License Key Update application (the guide's "Updating the license key") and the
license decoding Sage does in it, played.

Sage decodes its keys itself; the sandbox decodes keys of its own form, segments separated by
``-``: ``U<n>`` gives n users, ``F<letters>`` the features of :data:`FEATURES` (any order); e.g.
``LIC-2017R1-U25-FOXM-0002`` is 25 users with Outlook Integration, Multi-server and the
Extensibility Module. A key without them is accepted (8 or more characters, as ``check_license``)
but its users and features are unknown (None), as for a key this decoder does not know. The
installed key starts as :data:`INSTALLED_KEY` (the sandbox's install was made with it).

The update checks the key, stops nothing (the application needs no IIS restart), writes the key,
and registers nothing: the registration count is the installer's alone.
"""

from __future__ import annotations

import re
from typing import Any

from config.secrets import register_secret, secret_hash
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.sandbox.node import SandboxNode
from node_agent.protocol import Action, LicenseDetailsParams, LicenseParams

FEATURES = {
    "E": "Exchange Integration",
    "M": "Extensibility Module",
    "O": "Outlook Integration",
    "S": "Self Service",
    "W": "Workflow",
    "X": "Multi-server",
}
INSTALLED_KEY = "SANDBOX-U10-FOX-0000"
_USERS = re.compile(r"^U(\d{1,6})$")
_FEATURES = re.compile(r"^F([A-Z]+)$")


def key_hint(key: str) -> str:
    return "…" + key.strip()[-4:]


def decode(key: str) -> dict[str, Any]:
    """The users and features a sandbox key gives (None when it does not say)."""
    users: int | None = None
    features: list[str] | None = None
    for part in key.strip().split("-"):
        if m := _USERS.match(part):
            users = int(m.group(1))
        elif (m := _FEATURES.match(part)) and all(c in FEATURES for c in m.group(1)):
            features = sorted({FEATURES[c] for c in m.group(1)})
    return {
        "key_hash": secret_hash(key),
        "key_hint": key_hint(key),
        "users": users,
        "features": features,
        "checked": "decoded by the sandbox" if users is not None else "not a key the sandbox decodes",
    }


class SandboxLicense:
    def __init__(self, driver: SandboxNode, *, faults: Any) -> None:
        self.d = driver
        self.faults = faults

    def installed(self) -> dict[str, Any]:
        kept = self.d.state.get("license")
        if isinstance(kept, dict):
            return dict(kept)
        return decode(INSTALLED_KEY)

    async def license_details(self, params: LicenseDetailsParams, ctx: OperationContext) -> dict[str, Any]:
        if params.license_key is None:
            return self.installed()
        key = params.license_key.get_secret_value()
        register_secret(key)
        return decode(key)

    async def update_license_key(self, params: LicenseParams, ctx: OperationContext) -> dict[str, Any]:
        key = params.license_key.get_secret_value()
        register_secret(key)
        if len(key) < 8 or self.faults.take(Action.UPDATE_LICENSE_KEY, "invalid"):
            raise ActionFailed("the License Key Update application refused the key: it is not a valid key")
        exe = self.d.programs_root / self.d.install_name / "License Update" / "licensekeyupdate.exe"
        ctx.record(f"sandbox (played): {exe} (the new key entered, the wizard completed)")
        before = self.installed()
        after = decode(key)
        self.d.update_state(license=after, license_hash=after["key_hash"])
        return {
            "before": before,
            "after": after,
            "how": "License Key Update application (played)",
            "registered": False,
        }
