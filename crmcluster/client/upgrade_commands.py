"""``crmcluster upgrade …``: plan, start, watch and steer an upgrade run (DESIGN.md "Controller
contract", ``/api/v1/upgrades``).

``RUN`` defaults to the run still going, else the newest — except for ``rollback`` and
``accept``, which name the run. ``plan`` exits 1 when the preflight
blocks; ``start`` (watching) and ``watch`` exit 0 only when the run ``succeeded``. The license
key and the SQL password come from options, environment variables or a hidden prompt at a
terminal, and are never printed.
"""

from __future__ import annotations

import sys
import webbrowser
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.text import Text

from crmcluster.client.command_kit import (
    DemoOpt,
    JsonOpt,
    client_for,
    console_of,
    emit,
    fail,
)
from crmcluster.client.http import ApiFailure, ClientError, ControllerClient
from crmcluster.client.render import (
    plan_table,
    render_run,
    render_value,
    run_header,
    runs_table,
)
from crmcluster.client.values import BadArgument
from crmcluster.client.watcher import TERMINAL, next_step_hint, watch_run

RunArg = Annotated[str | None, typer.Argument(help="Upgrade run id (default: the current or latest run).")]

PREFLIGHT_BLOCKING = frozenset({"failed", "fail", "error", "blocker", "blocked"})


upgrade_app = typer.Typer(help="Upgrade the cluster in the guide's order.", no_args_is_help=True)


def _runs(answer: Any) -> list[dict[str, Any]]:
    if isinstance(answer, list):
        return answer
    if isinstance(answer, Mapping):
        for key in ("runs", "upgrades", "items"):
            if isinstance(answer.get(key), list):
                return list(answer[key])
    return []


def active_run(client: ControllerClient, *, required: bool = True) -> dict[str, Any] | None:
    """The run not yet ended (the newest), else the newest run."""
    try:
        runs = _runs(client.get("/upgrades"))
    except ApiFailure:
        if required:
            raise
        return None
    if not runs:
        if required:
            raise ClientError("no upgrade runs yet: plan one with `crmcluster upgrade plan`")
        return None
    runs.sort(key=lambda r: str(r.get("created_at") or ""), reverse=True)
    for run in runs:
        if run.get("status") not in TERMINAL:
            return run
    return runs[0]


def _run_id(client: ControllerClient, run_id: str | None) -> str:
    if run_id:
        return run_id
    run = active_run(client)
    assert run is not None
    return str(run["id"])


def preflight_blocked(run: Mapping[str, Any]) -> list[str]:
    """Names of preflight findings that stop the run (failed and not overridden)."""
    from crmcluster.client.render import finding_result

    if isinstance(run.get("blocking"), list):
        return [str(b) for b in run["blocking"]]
    findings = run.get("preflight") or []
    if isinstance(findings, Mapping):
        findings = findings.get("findings") or findings.get("checks") or []
    blocked = []
    for f in findings:
        if isinstance(f, Mapping) and finding_result(f).lower() in PREFLIGHT_BLOCKING:
            if not f.get("overridden"):
                blocked.append(str(f.get("name") or f.get("code") or f.get("check") or "?"))
    return blocked


TargetOpt = Annotated[str, typer.Option("--target", help="Version to upgrade to.")]
LicenseOpt = Annotated[
    str | None,
    typer.Option(
        "--license-key",
        envvar="CRMCLUSTER_LICENSE_KEY",
        help="License key for the target version (or CRMCLUSTER_LICENSE_KEY); asked for when missing "
        "at a terminal; never printed.",
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Non-database servers upgraded at once.")]
PolicyOpt = Annotated[
    str, typer.Option("--failure-policy", help="restore (put the live environment back) or pause.")
]
SignoffOpt = Annotated[bool, typer.Option("--require-signoff", help="Wait for `upgrade approve` first.")]
AcceptanceOpt = Annotated[
    bool,
    typer.Option(
        "--require-acceptance/--no-require-acceptance",
        help="Hold the upgraded cluster, users still out, until `upgrade accept` (default: hold).",
    ),
]
BackupOpt = Annotated[str | None, typer.Option("--backup-location", help="Where the backups go.")]
SqlServerOpt = Annotated[
    str | None, typer.Option("--sql-server", help="Database server name for the installer (wizard step 4).")
]
SqlPortOpt = Annotated[int, typer.Option("--sql-port", min=1, max=65535, help="Its port.")]
SqlUserOpt = Annotated[str | None, typer.Option("--sql-user", help="SQL Server login (not sa).")]
SqlPasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--sql-password",
        envvar="CRMCLUSTER_SQL_PASSWORD",
        help="Its password (or CRMCLUSTER_SQL_PASSWORD); asked for at a terminal; never printed.",
    ),
]
TriggersOpt = Annotated[
    bool, typer.Option("--disable-triggers", help="Disable triggers around the database upgrade.")
]
GraceOpt = Annotated[
    float, typer.Option("--drain-grace", min=0, help="Seconds users are told before they are locked out.")
]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes",
        help="Accept the acceptance hold as soon as the run reaches it (no row ticked; for the demo "
        "and scripts: without it, `upgrade accept RUN --note …` lets users return).",
    ),
]
YES_NOTE = "accepted from the command line (--yes): no test ticked"
OverrideOpt = Annotated[
    list[str] | None, typer.Option("--override", help="A preflight finding you accept (repeatable).")
]


def _license(license_key: str | None) -> str:
    if license_key:
        return license_key
    if sys.stdin.isatty():
        key: str = typer.prompt("License key for the target version", hide_input=True)
        return key
    raise BadArgument("--license-key (or CRMCLUSTER_LICENSE_KEY) is required")


@dataclass
class SqlLogin:
    server: str | None = None
    port: int = 1433
    user: str | None = None
    password: str | None = None

    def body(self) -> dict[str, Any] | None:
        """The ``database`` field of the plan request, or None when no login was given."""
        if not self.server and not self.user:
            return None
        if not self.server or not self.user:
            raise BadArgument("--sql-server and --sql-user go together")
        password = self.password
        if not password:
            if not sys.stdin.isatty():
                raise BadArgument("--sql-password (or CRMCLUSTER_SQL_PASSWORD) is required with --sql-user")
            password = str(typer.prompt(f"Password of SQL login {self.user}", hide_input=True))
        return {"server": self.server, "port": self.port, "user": self.user, "password": password}


def _plan_body(
    *,
    target: str,
    license_key: str | None,
    batch_size: int,
    failure_policy: str,
    require_signoff: bool,
    backup_location: str | None,
    override: list[str] | None,
    sql: SqlLogin,
    disable_triggers: bool,
    drain_grace: float,
    require_acceptance: bool = True,
) -> dict[str, Any]:
    if failure_policy not in ("restore", "pause"):
        raise BadArgument(f"--failure-policy: {failure_policy!r} is not restore or pause")
    body: dict[str, Any] = {
        "target_version": target,
        "license_key": _license(license_key),
        "batch_size": batch_size,
        "failure_policy": failure_policy,
        "require_signoff": require_signoff,
        "require_acceptance": require_acceptance,
        "overrides": override or [],
    }
    if backup_location:
        body["backup_location"] = backup_location
    login = sql.body()
    if login is not None:
        body["database"] = login
    if disable_triggers:
        body["disable_triggers"] = True
    if drain_grace:
        body["drain_grace"] = drain_grace
    return body


@upgrade_app.command("plan")
def upgrade_plan(
    ctx: typer.Context,
    license_key: LicenseOpt = None,
    target: TargetOpt = "2017 R1",
    batch_size: BatchOpt = 1,
    failure_policy: PolicyOpt = "restore",
    require_signoff: SignoffOpt = False,
    require_acceptance: AcceptanceOpt = True,
    backup_location: BackupOpt = None,
    override: OverrideOpt = None,
    sql_server: SqlServerOpt = None,
    sql_port: SqlPortOpt = 1433,
    sql_user: SqlUserOpt = None,
    sql_password: SqlPasswordOpt = None,
    disable_triggers: TriggersOpt = False,
    drain_grace: GraceOpt = 0.0,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Plan an upgrade and run its preflight; changes nothing (exit code 1 when preflight blocks)."""
    with client_for(ctx, demo) as client:
        body = _plan_body(
            target=target,
            license_key=license_key,
            batch_size=batch_size,
            failure_policy=failure_policy,
            require_signoff=require_signoff,
            backup_location=backup_location,
            override=override,
            sql=SqlLogin(sql_server, sql_port, sql_user, sql_password),
            disable_triggers=disable_triggers,
            drain_grace=drain_grace,
            require_acceptance=require_acceptance,
        )
        run = client.post("/upgrades", body)
    emit(ctx, json_, run, render_run(run))
    blocked = preflight_blocked(run)
    if blocked:
        if not json_:
            console_of(ctx).print(
                Text(f"preflight blocks the upgrade: {', '.join(blocked)} (fix, or --override NAME)", "red")
            )
        raise SystemExit(1)
    if not json_:
        console_of(ctx).print(f"start it with: crmcluster upgrade start {run.get('id')}")
        if (run.get("options") or {}).get("require_acceptance", True):
            console_of(ctx).print(
                "it holds before users return: test, then "
                f'crmcluster upgrade accept {run.get("id")} --tick ROW --note "…" (or start it with --yes)'
            )


@upgrade_app.command("start")
def upgrade_start(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="A planned run; without it, plan one now.")] = None,
    target: TargetOpt = "2017 R1",
    license_key: LicenseOpt = None,
    batch_size: BatchOpt = 1,
    failure_policy: PolicyOpt = "restore",
    require_signoff: SignoffOpt = False,
    require_acceptance: AcceptanceOpt = True,
    backup_location: BackupOpt = None,
    override: OverrideOpt = None,
    sql_server: SqlServerOpt = None,
    sql_port: SqlPortOpt = 1433,
    sql_user: SqlUserOpt = None,
    sql_password: SqlPasswordOpt = None,
    disable_triggers: TriggersOpt = False,
    drain_grace: GraceOpt = 0.0,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Follow it with progress bars.")] = True,
    yes: YesOpt = False,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Start an upgrade (planning it first when no run id is given), then watch it."""
    console = console_of(ctx)
    with client_for(ctx, demo) as client:
        if run_id is None:
            body = _plan_body(
                target=target,
                license_key=license_key,
                batch_size=batch_size,
                failure_policy=failure_policy,
                require_signoff=require_signoff,
                backup_location=backup_location,
                override=override,
                sql=SqlLogin(sql_server, sql_port, sql_user, sql_password),
                disable_triggers=disable_triggers,
                drain_grace=drain_grace,
                require_acceptance=require_acceptance,
            )
            planned = client.post("/upgrades", body)
            run_id = str(planned["id"])
            if not json_:
                console.print(render_run(planned, show_plan=False))
        run = client.post(f"/upgrades/{run_id}/start")
        if json_ or not watch:
            emit(ctx, json_, run, run_header(run))
            return
        final = watch_run(client, run_id, console=console, accept=YES_NOTE if yes else None)
    if final.get("status") != "succeeded":
        raise SystemExit(1)


@upgrade_app.command("watch")
def upgrade_watch(
    ctx: typer.Context,
    run_id: RunArg = None,
    yes: YesOpt = False,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Follow a run: progress bars per phase and per server (--json: one event per line)."""
    with client_for(ctx, demo) as client:
        rid = _run_id(client, run_id)
        final = watch_run(
            client, rid, console=console_of(ctx), json_lines=json_, accept=YES_NOTE if yes else None
        )
    if final.get("status") != "succeeded":
        raise SystemExit(1)


@upgrade_app.command("list")
def upgrade_list(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Upgrade runs, newest first."""
    with client_for(ctx, demo) as client:
        answer = client.get("/upgrades")
    runs = sorted(_runs(answer), key=lambda r: str(r.get("created_at") or ""), reverse=True)
    emit(ctx, json_, answer, runs_table(runs))


@upgrade_app.command("show")
def upgrade_show(
    ctx: typer.Context, run_id: RunArg = None, json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """A run: its status, preflight and every step of its plan."""
    with client_for(ctx, demo) as client:
        run = client.get(f"/upgrades/{_run_id(client, run_id)}")
    emit(ctx, json_, run, render_run(run))
    hint = next_step_hint(run) if isinstance(run, Mapping) and not json_ else None
    if hint:
        console_of(ctx).print(Text(hint, style="yellow"))


def _run_action(ctx: typer.Context, run_id: str | None, action: str, json_: bool, demo: Path | None) -> None:
    with client_for(ctx, demo) as client:
        rid = _run_id(client, run_id)
        run = client.post(f"/upgrades/{rid}/{action}")
    emit(ctx, json_, run, run_header(run) if isinstance(run, Mapping) else None)
    hint = next_step_hint(run) if isinstance(run, Mapping) and not json_ else None
    if hint:
        console_of(ctx).print(Text(hint, style="yellow"))


@upgrade_app.command("pause")
def upgrade_pause(
    ctx: typer.Context, run_id: RunArg = None, json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Pause after the running step."""
    _run_action(ctx, run_id, "pause", json_, demo)


@upgrade_app.command("resume")
def upgrade_resume(
    ctx: typer.Context, run_id: RunArg = None, json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Go on from where the run paused."""
    _run_action(ctx, run_id, "resume", json_, demo)


@upgrade_app.command("approve")
def upgrade_approve(
    ctx: typer.Context, run_id: RunArg = None, json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Sign off the freeze: the client agreed to the downtime."""
    _run_action(ctx, run_id, "approve", json_, demo)


@upgrade_app.command("abort")
def upgrade_abort(
    ctx: typer.Context, run_id: RunArg = None, json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Stop the run; touched servers are restored to the live environment."""
    _run_action(ctx, run_id, "abort", json_, demo)


@upgrade_app.command("accept")
def upgrade_accept(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run at its acceptance hold.")],
    note: Annotated[str, typer.Option("--note", help="Who tested what (required).")],
    tick: Annotated[
        list[str] | None,
        typer.Option("--tick", help="A row of 'Testing a live upgrade' you tested (repeatable; ROW=note)."),
    ] = None,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Accept the live upgrade at its hold (the rows you tested, a note): then users return."""
    rows: list[Any] = []
    for t in tick or []:
        rid, _, row_note = t.partition("=")
        rows.append({"id": rid.strip(), "note": row_note.strip() or None} if row_note else rid.strip())
    with client_for(ctx, demo) as client:
        run = client.post(f"/upgrades/{run_id}/accept", {"rows": rows, "note": note})
    emit(ctx, json_, run, run_header(run) if isinstance(run, Mapping) else None)


@upgrade_app.command("rollback")
def upgrade_rollback(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to roll back (named: never picked for you).")],
    accept_data_loss_since: Annotated[
        str | None,
        typer.Option(
            "--accept-data-loss-since",
            help="The run's returned_at: you accept losing what users wrote since (required once "
            "users were back).",
        ),
    ] = None,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Restore the live environment (the guide's "Restoring a Live Environment")."""
    body = {"accept_data_loss_since": accept_data_loss_since} if accept_data_loss_since else None
    with client_for(ctx, demo) as client:
        run = client.post(f"/upgrades/{run_id}/rollback", body)
    emit(ctx, json_, run, run_header(run) if isinstance(run, Mapping) else None)


@upgrade_app.command("retry")
def upgrade_retry(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run.")],
    step_id: Annotated[str, typer.Argument(help="The failed step to run again.")],
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Run a failed step again (really again: a new attempt)."""
    with client_for(ctx, demo) as client:
        answer = client.post(f"/upgrades/{run_id}/steps/{step_id}/retry")
    if isinstance(answer, Mapping) and isinstance(answer.get("plan"), list):
        human: RenderableType = plan_table([s for s in answer["plan"] if str(s.get("id")) == step_id])
    else:
        human = render_value(answer)
    emit(ctx, json_, answer, human)


@upgrade_app.command("resolve")
def upgrade_resolve(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run awaiting a fix.")],
    step_id: Annotated[str, typer.Argument(help="The step whose findings you fixed by hand.")],
    note: Annotated[str, typer.Option("--note", help="How it was fixed (goes into the checklist).")],
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Record how a step's "NB must be fixed" lines or failed scripts were fixed; then `resume`."""
    with client_for(ctx, demo) as client:
        answer = client.post(f"/upgrades/{run_id}/steps/{step_id}/resolve", {"note": note})
    emit(ctx, json_, answer, run_header(answer) if isinstance(answer, Mapping) else None)
    if not json_:
        console_of(ctx).print(Text(f"resolved; go on with: crmcluster upgrade resume {run_id}", "yellow"))


@upgrade_app.command("confirm")
def upgrade_confirm(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run.")],
    step_id: Annotated[str, typer.Argument(help="The step awaiting an operator.")],
    note: Annotated[str, typer.Option("--note", help="What you did (kept in the audit and checklist).")] = "",
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Confirm a step awaiting an operator (the manual installer: you ran the wizard by hand
    with the choices it lists); the agent then verifies it."""
    with client_for(ctx, demo) as client:
        answer = client.post(f"/upgrades/{run_id}/steps/{step_id}/confirm", {"note": note})
    if isinstance(answer, Mapping) and isinstance(answer.get("plan"), list):
        human: RenderableType = plan_table([s for s in answer["plan"] if str(s.get("id")) == step_id])
    else:
        human = render_value(answer)
    emit(ctx, json_, answer, human)


@upgrade_app.command("checklist")
def upgrade_checklist(
    ctx: typer.Context,
    run_id: RunArg = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write.")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open it in a browser.")] = False,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """The guide's upgrade checklist, filled in from the run: saved as HTML (--json: as data)."""
    with client_for(ctx, demo) as client:
        rid = _run_id(client, run_id)
        if json_:
            emit(ctx, True, client.get(f"/upgrades/{rid}/checklist"))
            return
        html = client.text(f"/api/v1/upgrades/{rid}/checklist", accept="text/html")
    path = output or Path(f"upgrade-checklist-{rid}.html")
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise fail(f"{path}: cannot write ({exc.strerror or exc})", 1) from None
    console_of(ctx).print(f"checklist saved to {path}")
    if open_:
        webbrowser.open(path.resolve().as_uri())
