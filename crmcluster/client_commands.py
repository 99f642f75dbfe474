"""Client commands: ``crmcluster status``, ``nodes …``, ``config …``, ``upgrade …`` and friends.

Each talks to the controller's REST API (DESIGN.md "Controller contract") through
:class:`~crmcluster.client.http.ControllerClient`: tables for people, ``--json`` for scripts.
The controller is found by ``--demo DIR``, ``CRMCLUSTER_CONTROLLER_URL`` +
``CRMCLUSTER_ADMIN_TOKEN``, or ``./crmcluster-data/demo.json``.

Exit codes: 0 done; 1 the operation failed (the controller refused, an upgrade ended badly,
a check found a problem); 2 a usage problem (no controller configured, a bad argument).
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
import webbrowser
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from crmcluster.client.http import ApiFailure, ClientError, ControllerClient
from crmcluster.client.jobs import job_of, render_job, wait_job
from crmcluster.client.render import (
    checks_view,
    plan_table,
    render_capacity,
    render_run,
    render_status,
    render_value,
    run_header,
    runs_table,
    short,
    styled,
    warnings_table,
)
from crmcluster.client.target import NoTarget, resolve_target
from crmcluster.client.values import BadArgument, config_body, pairs_body
from crmcluster.client.watcher import TERMINAL, next_step_hint, watch_run

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the controller's JSON answer (for scripts).")]
DemoOpt = Annotated[
    Path | None,
    typer.Option("--demo", help="Talk to the demo whose data directory (or demo.json) this is."),
]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends.")]
RunArg = Annotated[str | None, typer.Argument(help="Upgrade run id (default: the current or latest run).")]

PREFLIGHT_BLOCKING = frozenset({"failed", "fail", "error", "blocker", "blocked"})


@dataclass
class ClientOptions:
    """What tests (or an embedding program) inject through ``ctx.obj``."""

    transport: httpx.BaseTransport | None = None
    env: Mapping[str, str] | None = None
    console: Console | None = None


def _opts(ctx: typer.Context) -> ClientOptions:
    return ctx.obj if isinstance(ctx.obj, ClientOptions) else ClientOptions()


def _console(ctx: typer.Context) -> Console:
    return _opts(ctx).console or Console()


def _fail(message: str, code: int) -> SystemExit:
    typer.echo(f"crmcluster: {message}", err=True)
    return SystemExit(code)


@contextlib.contextmanager
def _client(ctx: typer.Context, demo: Path | None) -> Iterator[ControllerClient]:
    """A client for the configured controller; client errors become one line and an exit code."""
    opts = _opts(ctx)
    try:
        target = resolve_target(demo, opts.env)
        with ControllerClient(target, transport=opts.transport) as client:
            yield client
    except (NoTarget, BadArgument) as exc:
        raise _fail(str(exc), 2) from None
    except ClientError as exc:
        raise _fail(str(exc), 1) from None


def _emit(ctx: typer.Context, as_json: bool, data: Any, human: RenderableType | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        _console(ctx).print(human if human is not None else render_value(data))


def _finish(
    ctx: typer.Context,
    client: ControllerClient,
    answer: Any,
    *,
    json_: bool,
    wait: bool,
    title: str,
    human: RenderableType | None = None,
) -> None:
    """Show an answer that may carry a job; with ``wait``, follow the job and fail when it fails."""
    job = job_of(answer)
    if job is not None and wait:
        job = wait_job(client, job, console=None if json_ else _console(ctx))
        if isinstance(answer, Mapping) and isinstance(answer.get("job"), Mapping):
            answer = {**answer, "job": job}
        else:
            answer = job
    if json_:
        _emit(ctx, True, answer)
    else:
        console = _console(ctx)
        if human is not None:
            console.print(human)
        elif job is None:
            console.print(render_value(answer, title=title))
        if job is not None:
            console.print(render_job(job))
    if job is not None and wait and str(job.get("status")) != "succeeded":
        raise SystemExit(1)


# --- cluster -----------------------------------------------------------------------------------


def status(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """The cluster: servers, roles, state, version, logged-on users, warnings."""
    with _client(ctx, demo) as client:
        cluster = client.get("/cluster")
        active = _active_run(client, required=False)
        if json_:
            _emit(ctx, True, cluster)
            return
        console = _console(ctx)
        console.print(render_status(cluster))
        if active is not None and active.get("status") not in TERMINAL:
            console.print(run_header(active))


def capacity(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Database connections a metadata reload needs: one DLL plus one Tomcat pool per web server."""
    with _client(ctx, demo) as client:
        cap = client.get("/capacity")
    _emit(ctx, json_, cap, render_capacity(cap))
    headroom = cap.get("headroom") if isinstance(cap, Mapping) else None
    if isinstance(headroom, int | float) and headroom < 0:
        raise SystemExit(1)


nodes_app = typer.Typer(help="Servers of the cluster: add, remove, drain, undrain.", no_args_is_help=True)


@nodes_app.command("add")
def nodes_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The server's name, as in CRM Server Names.")],
    agent_url: Annotated[str, typer.Option("--agent-url", help="URL of the server's node agent.")],
    fqdn: Annotated[
        str | None, typer.Option(help="host[:port] of the server's CRM web server (FQServerNames).")
    ] = None,
    role: Annotated[list[str] | None, typer.Option("--role", help="A role it holds (repeatable).")] = None,
    join: Annotated[
        bool,
        typer.Option(
            "--join/--existing",
            help="Install it the guide's Replication-Engine-safe way, or register an installed server.",
        ),
    ] = False,
    license_key: Annotated[
        str | None,
        typer.Option("--license-key", envvar="CRMCLUSTER_LICENSE_KEY", help="Needed with --join."),
    ] = None,
    version: Annotated[str | None, typer.Option(help="Version to install with --join.")] = None,
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Add a web server to the cluster."""
    body: dict[str, Any] = {
        "name": name,
        "agent_url": agent_url,
        "fqdn": fqdn,
        "roles": role or [],
        "join": join,
    }
    if join:
        if not license_key:
            raise _fail("--license-key (or CRMCLUSTER_LICENSE_KEY) is required with --join", 2)
        body["license_key"] = license_key
        if version:
            body["version"] = version
    with _client(ctx, demo) as client:
        answer = client.post("/nodes", body)
        _finish(ctx, client, answer, json_=json_, wait=wait, title=f"{name} registered")


@nodes_app.command("remove")
def nodes_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Drain a web server, take it out of CRM Server Names and forget it."""
    with _client(ctx, demo) as client:
        answer = client.delete(f"/nodes/{name}")
        _finish(ctx, client, answer, json_=json_, wait=wait, title=f"removing {name}")


@nodes_app.command("drain")
def nodes_drain(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until its users have left (or the time-out).")
    ] = False,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Send no new logons to a server; its logged-on users stay until they log off."""
    with _client(ctx, demo) as client:
        answer = client.post(f"/nodes/{name}/drain")
        _finish(ctx, client, answer, json_=json_, wait=wait, title=f"{name}: draining")


@nodes_app.command("undrain")
def nodes_undrain(
    ctx: typer.Context, name: Annotated[str, typer.Argument()], json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Give a drained server logons again."""
    with _client(ctx, demo) as client:
        answer = client.post(f"/nodes/{name}/undrain")
    state = answer.get("state") if isinstance(answer, Mapping) else None
    _emit(ctx, json_, answer, Text.assemble(f"{name}: ", styled(state or "undrained")))


config_app = typer.Typer(help="Multi-server settings kept in Custom_SysParams.", no_args_is_help=True)


@config_app.command("show")
def config_show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """CRM Server Names, Do Load Balancing, DTLS Server Name, FQ names, ports, library."""
    from crmcluster.client.render import sysparams_table

    with _client(ctx, demo) as client:
        sysparams = client.get("/cluster").get("sysparams") or {}
    _emit(ctx, json_, sysparams, sysparams_table(sysparams))


@config_app.command("set")
def config_set(
    ctx: typer.Context,
    pairs: Annotated[list[str], typer.Argument(help="field=value, e.g. do_load_balancing=false")],
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Change settings (only those named); lists take ``;``: ``server_names='crm1;crm2'``."""
    from crmcluster.client.render import sysparams_table

    with _client(ctx, demo) as client:
        answer = client.put("/cluster/config", config_body(pairs))
    sysparams = answer.get("sysparams") if isinstance(answer, Mapping) else None
    human: list[RenderableType] = []
    if isinstance(sysparams, Mapping):
        human.append(sysparams_table(sysparams))
    if isinstance(answer, Mapping) and "warnings" in answer:
        human.append(warnings_table(answer.get("warnings") or []))
    _emit(ctx, json_, answer, Group(*human) if human else None)


services_app = typer.Typer(help="CRM services (Indexer, Escalation, Email Manager).", no_args_is_help=True)


def services_table(answer: Any) -> RenderableType:
    services = answer.get("services") if isinstance(answer, Mapping) else None
    if not isinstance(services, Mapping):
        return render_value(answer, title="CRM services")
    table = Table(title="CRM services (each installed once)", title_justify="left")
    for col in ("service", "server", "state", "installed on"):
        table.add_column(col)
    for name, row in services.items():
        row = row if isinstance(row, Mapping) else {"node": row}
        nodes = row.get("nodes") or []
        table.add_row(
            name.replace("_", " ").title(),
            short(row.get("node")),
            styled(row.get("state")),
            Text(short(nodes), style="bold red" if len(nodes) > 1 else ""),
        )
    return table


@services_app.command("show")
def services_show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Which server runs each CRM service (Indexer, Escalation, Email Manager)."""
    with _client(ctx, demo) as client:
        answer = client.get("/services")
    _emit(ctx, json_, answer, services_table(answer))


@services_app.command("set")
def services_set(
    ctx: typer.Context,
    pairs: Annotated[list[str], typer.Argument(help="service=server, e.g. indexer=crm2")],
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Move CRM services to other servers (uninstalled where they were, installed and started there)."""
    with _client(ctx, demo) as client:
        answer = client.put("/services", pairs_body(pairs))
        _finish(ctx, client, answer, json_=json_, wait=wait, title="CRM services")
        if not json_:
            _console(ctx).print(services_table(client.get("/services")))


re_app = typer.Typer(help="The one Replication Engine of the cluster.", no_args_is_help=True)


def engine_view(answer: Any) -> RenderableType:
    if not isinstance(answer, Mapping) or "node" not in answer:
        return render_value(answer, title="Replication Engine")
    holder = answer.get("node")
    head = Text.assemble(
        ("Replication Engine on: ", "bold"),
        (str(holder), "green")
        if holder
        else ("none or several: " + short(answer.get("holders")), "bold red"),
    )
    rows = answer.get("nodes")
    return Group(head, render_value(rows)) if isinstance(rows, list) and rows else head


@re_app.command("show")
def re_show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """The server holding the Replication Engine, as the agents report it."""
    with _client(ctx, demo) as client:
        answer = client.get("/replication-engine")
    _emit(ctx, json_, answer, engine_view(answer))


@re_app.command("move")
def re_move(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="The server to hold it.")],
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Move the Replication Engine: removed (and seen gone) on its holder, then installed on NODE."""
    with _client(ctx, demo) as client:
        answer = client.put("/replication-engine", {"node": node})
        _finish(
            ctx, client, answer, json_=json_, wait=wait, title="Replication Engine", human=engine_view(answer)
        )


library_app = typer.Typer(help="The shared library (DocStore) every server must reach.", no_args_is_help=True)


@library_app.command("show")
def library_show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """The library root and mail-merge templates location."""
    with _client(ctx, demo) as client:
        answer = client.get("/library")
    _emit(ctx, json_, answer, render_value(answer, title="Library"))


def _reports_problem(answer: Any) -> bool:
    """True when a check's answer says something is wrong (``ok: false`` anywhere at the top)."""
    if not isinstance(answer, Mapping):
        return False
    if answer.get("ok") is False or answer.get("failed"):
        return True
    for rows in answer.values():
        if isinstance(rows, list) and any(
            isinstance(r, Mapping) and (r.get("ok") is False or r.get("reachable") is False) for r in rows
        ):
            return True
    return False


@library_app.command("verify")
def library_verify(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Probe the library from every server (exit code 1 when one cannot reach it)."""
    with _client(ctx, demo) as client:
        answer = client.post("/library/verify")
    _emit(ctx, json_, answer, checks_view(answer, title="Library probe"))
    if _reports_problem(answer):
        raise SystemExit(1)


metadata_app = typer.Typer(help="CRM metadata (eware.dll and Tomcat).", no_args_is_help=True)


@metadata_app.command("refresh")
def metadata_refresh(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Reload metadata on every server, as after a customization."""
    with _client(ctx, demo) as client:
        answer = client.post("/metadata/refresh")
    _emit(ctx, json_, answer, checks_view(answer, title="Metadata reload"))
    if _reports_problem(answer):
        raise SystemExit(1)


# --- upgrades ----------------------------------------------------------------------------------

upgrade_app = typer.Typer(help="Upgrade the cluster in the guide's order.", no_args_is_help=True)


def _runs(answer: Any) -> list[dict[str, Any]]:
    if isinstance(answer, list):
        return answer
    if isinstance(answer, Mapping):
        for key in ("runs", "upgrades", "items"):
            if isinstance(answer.get(key), list):
                return list(answer[key])
    return []


def _active_run(client: ControllerClient, *, required: bool = True) -> dict[str, Any] | None:
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
    run = _active_run(client)
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
) -> dict[str, Any]:
    if failure_policy not in ("restore", "pause"):
        raise BadArgument(f"--failure-policy: {failure_policy!r} is not restore or pause")
    body: dict[str, Any] = {
        "target_version": target,
        "license_key": _license(license_key),
        "batch_size": batch_size,
        "failure_policy": failure_policy,
        "require_signoff": require_signoff,
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
    with _client(ctx, demo) as client:
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
        )
        run = client.post("/upgrades", body)
    _emit(ctx, json_, run, render_run(run))
    blocked = preflight_blocked(run)
    if blocked:
        if not json_:
            _console(ctx).print(
                Text(f"preflight blocks the upgrade: {', '.join(blocked)} (fix, or --override NAME)", "red")
            )
        raise SystemExit(1)
    if not json_:
        _console(ctx).print(f"start it with: crmcluster upgrade start {run.get('id')}")


@upgrade_app.command("start")
def upgrade_start(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="A planned run; without it, plan one now.")] = None,
    target: TargetOpt = "2017 R1",
    license_key: LicenseOpt = None,
    batch_size: BatchOpt = 1,
    failure_policy: PolicyOpt = "restore",
    require_signoff: SignoffOpt = False,
    backup_location: BackupOpt = None,
    override: OverrideOpt = None,
    sql_server: SqlServerOpt = None,
    sql_port: SqlPortOpt = 1433,
    sql_user: SqlUserOpt = None,
    sql_password: SqlPasswordOpt = None,
    disable_triggers: TriggersOpt = False,
    drain_grace: GraceOpt = 0.0,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Follow it with progress bars.")] = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Start an upgrade (planning it first when no run id is given), then watch it."""
    console = _console(ctx)
    with _client(ctx, demo) as client:
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
            )
            planned = client.post("/upgrades", body)
            run_id = str(planned["id"])
            if not json_:
                console.print(render_run(planned, show_plan=False))
        run = client.post(f"/upgrades/{run_id}/start")
        if json_ or not watch:
            _emit(ctx, json_, run, run_header(run))
            return
        final = watch_run(client, run_id, console=console)
    if final.get("status") != "succeeded":
        raise SystemExit(1)


@upgrade_app.command("watch")
def upgrade_watch(
    ctx: typer.Context, run_id: RunArg = None, json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Follow a run: progress bars per phase and per server (``--json``: one event per line)."""
    with _client(ctx, demo) as client:
        rid = _run_id(client, run_id)
        final = watch_run(client, rid, console=_console(ctx), json_lines=json_)
    if final.get("status") != "succeeded":
        raise SystemExit(1)


@upgrade_app.command("list")
def upgrade_list(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Upgrade runs, newest first."""
    with _client(ctx, demo) as client:
        answer = client.get("/upgrades")
    runs = sorted(_runs(answer), key=lambda r: str(r.get("created_at") or ""), reverse=True)
    _emit(ctx, json_, answer, runs_table(runs))


@upgrade_app.command("show")
def upgrade_show(
    ctx: typer.Context, run_id: RunArg = None, json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """A run: its status, preflight and every step of its plan."""
    with _client(ctx, demo) as client:
        run = client.get(f"/upgrades/{_run_id(client, run_id)}")
    _emit(ctx, json_, run, render_run(run))


def _run_action(ctx: typer.Context, run_id: str | None, action: str, json_: bool, demo: Path | None) -> None:
    with _client(ctx, demo) as client:
        rid = _run_id(client, run_id)
        run = client.post(f"/upgrades/{rid}/{action}")
    _emit(ctx, json_, run, run_header(run) if isinstance(run, Mapping) else None)
    hint = next_step_hint(run) if isinstance(run, Mapping) and not json_ else None
    if hint:
        _console(ctx).print(Text(hint, style="yellow"))


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


@upgrade_app.command("rollback")
def upgrade_rollback(
    ctx: typer.Context, run_id: RunArg = None, json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Restore the live environment (the guide's "Restoring a Live Environment")."""
    _run_action(ctx, run_id, "rollback", json_, demo)


@upgrade_app.command("retry")
def upgrade_retry(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run.")],
    step_id: Annotated[str, typer.Argument(help="The failed step to run again.")],
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Run a failed step again (really again: a new attempt)."""
    with _client(ctx, demo) as client:
        answer = client.post(f"/upgrades/{run_id}/steps/{step_id}/retry")
    if isinstance(answer, Mapping) and isinstance(answer.get("plan"), list):
        human: RenderableType = plan_table([s for s in answer["plan"] if str(s.get("id")) == step_id])
    else:
        human = render_value(answer)
    _emit(ctx, json_, answer, human)


@upgrade_app.command("checklist")
def upgrade_checklist(
    ctx: typer.Context,
    run_id: RunArg = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write.")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open it in a browser.")] = False,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """The guide's upgrade checklist, filled in from the run: saved as HTML (``--json``: as data)."""
    with _client(ctx, demo) as client:
        rid = _run_id(client, run_id)
        if json_:
            _emit(ctx, True, client.get(f"/upgrades/{rid}/checklist"))
            return
        html = client.text(f"/api/v1/upgrades/{rid}/checklist", accept="text/html")
    path = output or Path(f"upgrade-checklist-{rid}.html")
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{path}: cannot write ({exc.strerror or exc})", 1) from None
    _console(ctx).print(f"checklist saved to {path}")
    if open_:
        webbrowser.open(path.resolve().as_uri())


def register(app: typer.Typer) -> None:
    """Add the client commands to the root ``crmcluster`` app."""
    app.command("status")(status)
    app.command("capacity")(capacity)
    app.add_typer(nodes_app, name="nodes")
    app.add_typer(config_app, name="config")
    app.add_typer(services_app, name="services")
    app.add_typer(re_app, name="replication-engine")
    app.add_typer(library_app, name="library")
    app.add_typer(metadata_app, name="metadata")
    app.add_typer(upgrade_app, name="upgrade")
