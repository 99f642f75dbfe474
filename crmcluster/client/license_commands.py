"""``crmcluster license show|update``: the license key (``/api/v1/license``). ``update`` shows the
differences (users, features) on every server and changes nothing; ``update --apply`` then puts
the key on every server that lacks it, as the License Key Update application does (no
registration spent). The key comes from ``--license-key``, ``CRMCLUSTER_LICENSE_KEY`` or a hidden
prompt and is never printed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from crmcluster.client.command_kit import DemoOpt, JsonOpt, WaitOpt, client_for, emit, finish
from crmcluster.client.render import short
from crmcluster.client.upgrade_commands import LicenseOpt, _license

license_app = typer.Typer(
    help="The license key: registrations, and a new key on every server.", no_args_is_help=True
)
ApplyOpt = Annotated[
    bool, typer.Option("--apply", help="Update the servers (default: show the differences only).")
]


def _features(f: Any) -> str:
    if not isinstance(f, Mapping):
        return "not readable"
    out = [f"+{x}" for x in f.get("added", [])] + [f"-{x}" for x in f.get("removed", [])]
    return ", ".join(out) or "same"


def differences_view(answer: Any) -> RenderableType:
    if not isinstance(answer, Mapping):
        return Text(short(answer))
    table = Table(title=f"New key {answer.get('key_hint')}: {answer.get('summary')}", title_justify="left")
    for col in ("server", "installed", "users", "features", "to update"):
        table.add_column(col)
    for name, s in (answer.get("servers") or {}).items():
        users = s.get("users") or {}
        table.add_row(
            name,
            short((s.get("installed") or {}).get("key_hint")),
            f"{short(users.get('before'))} → {short(users.get('after'))}",
            _features(s.get("features")),
            "no (already)" if s.get("same_key") else "yes",
        )
    note = Text("No registration is spent: updating a key registers nothing.", style="dim")
    return Group(table, note)


@license_app.command("show")
def show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """The license key's hint and its registrations (used of five)."""
    with client_for(ctx, demo) as client:
        answer = client.get("/license")
    emit(ctx, json_, answer)


@license_app.command("update")
def update(
    ctx: typer.Context,
    license_key: LicenseOpt = None,
    apply: ApplyOpt = False,
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Show what a new key changes on every server; with --apply, update them."""
    with client_for(ctx, demo) as client:
        key = _license(license_key)
        answer = client.put("/license", {"license_key": key, "preview": not apply})
        if apply and isinstance(answer, Mapping) and answer.get("job"):
            finish(
                ctx,
                client,
                answer,
                json_=json_,
                wait=wait,
                title="License key update",
                human=differences_view(answer),
            )
            return
    emit(ctx, json_, answer, differences_view(answer))
