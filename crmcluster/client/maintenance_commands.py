"""``crmcluster maintenance show|apply|run|restore-points``: the guide's database maintenance plan,
kept by SQL Server Agent on the database server (``/api/v1/maintenance``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from crmcluster.client.command_kit import DemoOpt, JsonOpt, WaitOpt, client_for, emit, finish
from crmcluster.client.render import short, styled, warnings_table

maintenance_app = typer.Typer(
    help="The database maintenance plan (the guide's table) as SQL Server Agent jobs.", no_args_is_help=True
)


def _when(value: Any) -> str:
    text = str(value or "")
    if "T" not in text:
        return text or "-"
    day, _, time = text.partition("T")
    return f"{day} {time[:5]}"


def tasks_table(tasks: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title="Maintenance plan (SQL Server Agent)", title_justify="left")
    for col in ("task", "guide", "schedule", "last run (UTC)", "result", "next run", "message"):
        table.add_column(col)
    for t in tasks:
        outcome = "running" if t.get("running") else t.get("last_outcome")
        failed = outcome == "failed"
        table.add_row(
            Text(str(t.get("label") or t.get("task")), style="bold" if t.get("scheduled") else "dim"),
            short(t.get("guide")),
            short(t.get("schedule_text")),
            _when(t.get("last_run_at")),
            styled(outcome or "-"),
            _when(t.get("next_run_at")),
            Text(str(t.get("last_message") or "")[:120], style="red" if failed else "dim"),
        )
    return table


def restore_points_table(points: Iterable[Mapping[str, Any]]) -> RenderableType:
    rows = list(points)
    if not rows:
        return Text("No restore point recorded yet.", style="yellow")
    table = Table(title="Restore points (msdb backupset)", title_justify="left")
    for col in ("kind", "finished (UTC)", "size", "file"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for p in rows:
        size = p.get("size_bytes")
        table.add_row(
            short(p.get("kind")),
            _when(p.get("finished_at")),
            f"{size / 1024:,.0f} KiB" if isinstance(size, int | float) else "-",
            short(p.get("path")),
        )
    return table


def report_view(report: Any) -> RenderableType:
    if not isinstance(report, Mapping):
        return Text(short(report))
    head = Text.assemble(
        ("Database server: ", "bold"),
        short(report.get("database_server")),
        ("   database: ", "bold"),
        short(report.get("database")),
        ("   recovery model: ", "bold"),
        short(report.get("recovery_model")),
        ("   SQL Server Agent: ", "bold"),
        {True: "running", False: "STOPPED", None: "unknown"}.get(report.get("agent_running"), "unknown"),
    )
    return Group(
        head,
        tasks_table(report.get("tasks") or []),
        restore_points_table((report.get("restore_points") or [])[:10]),
        warnings_table(report.get("warnings") or []),
    )


def _failing(report: Any) -> bool:
    return isinstance(report, Mapping) and any(
        w.get("code") == "maintenance_task_failed" for w in report.get("warnings") or []
    )


@maintenance_app.command("show")
def show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Each task: schedule, last and next run, last result (exit code 1 when a task's last run failed)."""
    with client_for(ctx, demo) as client:
        report = client.get("/maintenance")
    emit(ctx, json_, report, report_view(report))
    if _failing(report):
        raise SystemExit(1)


@maintenance_app.command("apply")
def apply(
    ctx: typer.Context,
    shrink: Annotated[
        str,
        typer.Option(help="monthly (the guide's table) or never (its note: not needed with these backups)."),
    ] = "never",
    full_backup_day: Annotated[
        str, typer.Option("--full-backup-day", help="Night of the weekly full backup.")
    ] = ("sunday"),
    retention_days: Annotated[int, typer.Option("--retention-days", help="Backups kept this long.")] = 28,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Create (or update) the guide's plan as SQL Server Agent jobs on the database server."""
    body = {"shrink": shrink, "full_backup_day": full_backup_day, "retention_days": retention_days}
    with client_for(ctx, demo) as client:
        report = client.put("/maintenance", body)
    applied = report.get("applied", {}) if isinstance(report, Mapping) else {}
    summary = Text(
        f"jobs created: {len(applied.get('created', []))}, updated: {len(applied.get('updated', []))}, "
        f"deleted: {len(applied.get('deleted', []))}",
        style="green",
    )
    emit(ctx, json_, report, Group(summary, report_view(report)))


@maintenance_app.command("run")
def run(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="e.g. full_backup, consistency_check, log_backup")],
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Run a task now (sp_start_job) and follow it to its outcome."""
    with client_for(ctx, demo) as client:
        job = client.post(f"/maintenance/{task}/run")
        finish(ctx, client, job, json_=json_, wait=wait, title=f"maintenance: {task}")


@maintenance_app.command("restore-points")
def restore_points(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """The database backups SQL Server recorded (full, differential, log), newest first."""
    with client_for(ctx, demo) as client:
        report = client.get("/maintenance")
    points = report.get("restore_points", []) if isinstance(report, Mapping) else []
    emit(ctx, json_, points, restore_points_table(points))
