"""``crmcluster audit``: the cluster read against the guide, changing nothing
(``GET /api/v1/cluster/audit``): each server's prerequisites, each check with the command that read
it. Exit code 1 when a check fails (a ``warn`` alone exits 0)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from crmcluster.client.command_kit import DemoOpt, JsonOpt, client_for, emit
from crmcluster.client.render import short, styled

AllOpt = Annotated[bool, typer.Option("--all", help="Show the checks that pass too.")]


def audit_view(answer: Any, *, show_all: bool) -> RenderableType:
    if not isinstance(answer, Mapping):
        return Text(short(answer))
    parts: list[RenderableType] = [
        Text.assemble(
            ("Audit: ", "bold"), styled(answer.get("status")), f"   (read at {answer.get('checked_at')})"
        )
    ]
    for name, part in (answer.get("parts") or {}).items():
        table = Table(title=f"{name}: {part.get('message', '')}", title_justify="left")
        for col in ("server", "check", "result", "message", "read by"):
            table.add_column(col, overflow="fold")
        rows = 0
        for node, rep in sorted((part.get("nodes") or {}).items()):
            for c in rep.get("checks", []):
                if c.get("status") == "pass" and not show_all:
                    continue
                rows += 1
                table.add_row(
                    node,
                    short(c.get("check")),
                    styled(c.get("status")),
                    short(c.get("message")),
                    Text(short(c.get("command")), style="dim"),
                )
        parts.append(table if rows else Text(f"{name}: every check passes", style="green"))
    return Group(*parts)


def audit(ctx: typer.Context, show_all: AllOpt = False, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Check every server against the guide's prerequisites (IIS role services, parent paths, other
    websites, SQL Server's TCP/IP and collation, memory, free disk); changes nothing."""
    with client_for(ctx, demo) as client:
        answer = client.get("/cluster/audit")
    emit(ctx, json_, answer, audit_view(answer, show_all=show_all))
    if isinstance(answer, Mapping) and answer.get("status") == "fail":
        raise SystemExit(1)
