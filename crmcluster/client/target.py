"""Which controller a client command talks to, and with which token.

In order: ``--demo DIR`` (that demo's ``demo.json``); else ``CRMCLUSTER_CONTROLLER_URL`` with
``CRMCLUSTER_ADMIN_TOKEN``; else ``./crmcluster-data/demo.json`` when a demo is running here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from crmcluster.client.http import ClientError, Target

DEFAULT_DEMO_DIR = Path("crmcluster-data")


class NoTarget(ClientError):
    """No controller is configured (exit code 2: a usage problem, not a failed operation)."""


def read_demo(path: Path) -> dict[str, object]:
    """The ``demo.json`` at ``path`` (a file, or the demo's data directory)."""
    file = path / "demo.json" if path.is_dir() or path.suffix != ".json" else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoTarget(f"{file}: not found; is `crmcluster demo --data-dir {path}` running?") from None
    except (OSError, ValueError) as exc:
        raise NoTarget(f"{file}: unreadable ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not data.get("controller_url") or not data.get("admin_token"):
        raise NoTarget(f"{file}: no controller_url/admin_token in it")
    return data


def resolve_target(demo: Path | None, env: Mapping[str, str] | None = None) -> Target:
    env = os.environ if env is None else env
    if demo is not None:
        data = read_demo(demo)
        return Target(str(data["controller_url"]), str(data["admin_token"]), source=f"demo {demo}")
    url, token = env.get("CRMCLUSTER_CONTROLLER_URL"), env.get("CRMCLUSTER_ADMIN_TOKEN")
    if url and token:
        return Target(url, token, source="environment")
    if url and not token:
        raise NoTarget("CRMCLUSTER_ADMIN_TOKEN: required with CRMCLUSTER_CONTROLLER_URL, not set")
    default = DEFAULT_DEMO_DIR / "demo.json"
    if default.exists():
        data = read_demo(default)
        return Target(
            str(data["controller_url"]), str(data["admin_token"]), source=f"demo {DEFAULT_DEMO_DIR}"
        )
    raise NoTarget(
        "no controller: set CRMCLUSTER_CONTROLLER_URL and CRMCLUSTER_ADMIN_TOKEN, "
        "or pass --demo DIR of a running `crmcluster demo`"
    )
