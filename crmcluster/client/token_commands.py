"""``crmcluster tokens create|list|revoke``: API tokens with roles (``/api/v1/tokens``, admin).

``create`` prints the token once (``--json``: ``{"token": …}`` and the record); ``list`` shows
names, roles and dates, never a token; ``revoke`` ends a token now, with the dashboard sessions
opened with it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from crmcluster.client.command_kit import DemoOpt, JsonOpt, client_for, console_of, emit, fail

tokens_app = typer.Typer(help="API tokens with roles: viewer, operator, admin.", no_args_is_help=True)
ROLES = ("viewer", "operator", "admin")


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option("--role", help="viewer (reads), operator (+ drain, pause …), admin.")],
    name: Annotated[str, typer.Option("--name", help="Its name in the audit trail (e.g. prometheus).")],
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Make an API token; it is shown this once (the controller keeps only its hash)."""
    if role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}", 2)
    with client_for(ctx, demo) as client:
        answer = client.post("/tokens", {"name": name, "role": role})
    if json_:
        emit(ctx, True, answer)
        return
    console = console_of(ctx)
    console.print(Text.assemble((f"{role} token {name} ", "bold"), "(shown once; keep it safe):"))
    console.print(str(answer.get("token")), markup=False, highlight=False, soft_wrap=True)


def tokens_table(answer: Any) -> Table:
    table = Table(title="API tokens", title_justify="left")
    for col in ("name", "role", "created", "by", "last used"):
        table.add_column(col)
    for t in answer.get("tokens") or [] if isinstance(answer, dict) else []:
        table.add_row(
            str(t.get("name")),
            str(t.get("role")),
            str(t.get("created_at") or "—"),
            str(t.get("created_by") or "—"),
            str(t.get("last_used_at") or "never"),
        )
    return table


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """The API tokens: name, role, who made it, when it was last used (never the token)."""
    with client_for(ctx, demo) as client:
        answer = client.get("/tokens")
    emit(ctx, json_, answer, tokens_table(answer))


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The token's name.")],
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Revoke a token now (and sign out the dashboard sessions opened with it)."""
    with client_for(ctx, demo) as client:
        answer = client.delete(f"/tokens/{name}")
    emit(ctx, json_, answer, Text(f"{name}: revoked"))
