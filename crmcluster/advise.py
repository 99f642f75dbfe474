"""``crmcluster advise``: the guide's server hardware recommendation for a planned installation.

Runs here, without a controller (sizing comes before anything is installed); the rules are in
:mod:`config.sizing`, and the controller answers the same at ``GET /api/v1/sizing``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from config.sizing import SizingAdvice, advise
from crmcluster.client.command_kit import JsonOpt, emit, fail


def render_advice(advice: SizingAdvice) -> RenderableType:
    head = Text.assemble(
        ("Recommendation: ", "bold"),
        (advice.summary, "green"),
        "\n",
        ("Guide's table row: ", "bold"),
        f"{advice.row.users} users — {advice.row.servers}",
        "\n",
        ("Processors: ", "bold"),
        advice.row.processors,
    )
    machines = Table(title="Machines", title_justify="left")
    for col in ("machine", "count", "memory (min)", "plan on", "disks", "software"):
        machines.add_column(col)
    for m in advice.machines:
        machines.add_row(
            m.role,
            m.count,
            f"{m.memory_gb_min:g} GB",
            f"{m.memory_gb_plan} GB",
            m.disks,
            m.software or "-",
        )
    reasons = Table(title="Why (the guide's rules)", title_justify="left")
    reasons.add_column("rule", style="bold")
    reasons.add_column("the guide says", style="italic")
    reasons.add_column("for you")
    for r in advice.reasons:
        reasons.add_row(r.rule, r.guide, r.finding)
    notes = Text("\n".join(f"- {n}" for n in advice.notes))
    return Group(head, machines, reasons, Text("Also:", style="bold"), notes)


def advise_command(
    ctx: typer.Context,
    users: Annotated[int, typer.Option("--users", help="Number of Sage CRM users.")],
    db_size: Annotated[float, typer.Option("--db-size", help="Database size now, in GB.")],
    growth: Annotated[float, typer.Option("--growth", help="Database growth, in GB per year.")] = 0.0,
    call_center: Annotated[
        bool, typer.Option("--call-center", help="The users are call center users (the table's assumption).")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """The guide's server hardware recommendation, with its reasons."""
    try:
        advice = advise(users=users, call_center=call_center, db_size_gb=db_size, growth_gb_per_year=growth)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    emit(ctx, json_, advice.as_json(), render_advice(advice))


def register(app: typer.Typer) -> None:
    app.command("advise")(advise_command)
