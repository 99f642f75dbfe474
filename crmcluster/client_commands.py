"""Client commands: ``crmcluster status``, ``nodes …``, ``config …``, ``services …`` and friends
(the ``upgrade …`` commands live in :mod:`crmcluster.client.upgrade_commands`).

Each talks to the controller's REST API (DESIGN.md "Controller contract") through
:class:`~crmcluster.client.http.ControllerClient`: tables for people, ``--json`` for scripts.
The controller is found by ``--demo DIR``, ``CRMCLUSTER_CONTROLLER_URL`` +
``CRMCLUSTER_ADMIN_TOKEN``, or ``./crmcluster-data/demo.json``.

Exit codes: 0 done; 1 the operation failed (the controller refused, an upgrade ended badly,
a check found a problem); 2 a usage problem (no controller configured, a bad argument).
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from crmcluster.client.audit_command import audit
from crmcluster.client.command_kit import (
    ClientOptions,
    DemoOpt,
    JsonOpt,
    WaitOpt,
    client_for,
    console_of,
    emit,
    fail,
    finish,
)
from crmcluster.client.https_commands import https_app
from crmcluster.client.license_commands import license_app
from crmcluster.client.maintenance_commands import maintenance_app
from crmcluster.client.render import (
    checks_view,
    render_capacity,
    render_status,
    render_value,
    run_header,
    short,
    styled,
    warnings_table,
)
from crmcluster.client.token_commands import tokens_app
from crmcluster.client.upgrade_commands import active_run, upgrade_app
from crmcluster.client.values import config_body, pairs_body
from crmcluster.client.watcher import TERMINAL

__all__ = ["ClientOptions", "register"]


# --- cluster -----------------------------------------------------------------------------------


def status(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """The cluster: servers, roles, state, version, logged-on users, warnings."""
    with client_for(ctx, demo) as client:
        cluster = client.get("/cluster")
        active = active_run(client, required=False)
        if json_:
            emit(ctx, True, cluster)
            return
        console = console_of(ctx)
        console.print(render_status(cluster))
        if active is not None and active.get("status") not in TERMINAL:
            console.print(run_header(active))


def capacity(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Database connections a metadata reload needs: one DLL plus one Tomcat pool per web server."""
    with client_for(ctx, demo) as client:
        cap = client.get("/capacity")
    emit(ctx, json_, cap, render_capacity(cap))
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
    tls_fingerprint: Annotated[
        str | None,
        typer.Option(
            "--tls-fingerprint",
            help="SHA-256 fingerprint of an https agent's certificate (crmcluster tls new-cert printed it).",
        ),
    ] = None,
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
    if tls_fingerprint:
        body["tls_fingerprint"] = tls_fingerprint
    if join:
        if not license_key:
            raise fail("--license-key (or CRMCLUSTER_LICENSE_KEY) is required with --join", 2)
        body["license_key"] = license_key
        if version:
            body["version"] = version
    with client_for(ctx, demo) as client:
        answer = client.post("/nodes", body)
        token = answer.pop("agent_token", None) if isinstance(answer, dict) and not json_ else None
        finish(ctx, client, answer, json_=json_, wait=wait, title=f"{name} registered")
    if token:
        show_agent_token(ctx, name, str(token))


def show_agent_token(ctx: typer.Context, name: str, token: str) -> None:
    """The node's own agent token, which the controller shows this once."""
    console = console_of(ctx)
    console.print(
        Text.assemble(
            (f"agent token of {name} ", "bold"),
            "(shown once; set it as CRMCLUSTER_AGENT_TOKEN on that server's agent):",
        )
    )
    console.print(token, markup=False, highlight=False, soft_wrap=True)


@nodes_app.command("rotate-token")
def nodes_rotate_token(
    ctx: typer.Context, name: Annotated[str, typer.Argument()], json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Give a server's agent a new token (the old one stops working at once)."""
    with client_for(ctx, demo) as client:
        answer = client.post(f"/nodes/{name}/token")
    if json_:
        emit(ctx, True, answer)
        return
    show_agent_token(ctx, name, str(answer.get("agent_token")))


@nodes_app.command("remove")
def nodes_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    uninstall: Annotated[
        bool,
        typer.Option(
            "--uninstall",
            help="Then uninstall Sage CRM from it the guide's manual way (never the shared database).",
        ),
    ] = False,
    drain_timeout: Annotated[
        float | None, typer.Option("--drain-timeout", help="Seconds to wait for its users to leave.")
    ] = None,
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Drain a web server, take it out of CRM Server Names and forget it (--uninstall: and
    uninstall Sage CRM from it: services, Tomcat, eware.dll, IIS application, registry, folder)."""
    query = []
    if uninstall:
        query.append("uninstall=true")
    if drain_timeout is not None:
        query.append(f"drain_timeout={drain_timeout:g}")
    path = f"/nodes/{name}" + ("?" + "&".join(query) if query else "")
    title = f"removing {name}" + (" and uninstalling Sage CRM" if uninstall else "")
    with client_for(ctx, demo) as client:
        answer = client.delete(path)
        finish(ctx, client, answer, json_=json_, wait=wait, title=title)


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
    with client_for(ctx, demo) as client:
        answer = client.post(f"/nodes/{name}/drain")
        finish(ctx, client, answer, json_=json_, wait=wait, title=f"{name}: draining")


@nodes_app.command("undrain")
def nodes_undrain(
    ctx: typer.Context, name: Annotated[str, typer.Argument()], json_: JsonOpt = False, demo: DemoOpt = None
) -> None:
    """Give a drained server logons again."""
    with client_for(ctx, demo) as client:
        answer = client.post(f"/nodes/{name}/undrain")
    state = answer.get("state") if isinstance(answer, Mapping) else None
    emit(ctx, json_, answer, Text.assemble(f"{name}: ", styled(state or "undrained")))


config_app = typer.Typer(help="Multi-server settings kept in Custom_SysParams.", no_args_is_help=True)


@config_app.command("show")
def config_show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """CRM Server Names, Do Load Balancing, DTLS Server Name, FQ names, ports, library."""
    from crmcluster.client.render import sysparams_table

    with client_for(ctx, demo) as client:
        sysparams = client.get("/cluster").get("sysparams") or {}
    emit(ctx, json_, sysparams, sysparams_table(sysparams))


@config_app.command("set")
def config_set(
    ctx: typer.Context,
    pairs: Annotated[list[str], typer.Argument(help="field=value, e.g. do_load_balancing=false")],
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Change settings (only those named); lists take ';', e.g. server_names='crm1;crm2'."""
    from crmcluster.client.render import sysparams_table

    with client_for(ctx, demo) as client:
        answer = client.put("/cluster/config", config_body(pairs))
    sysparams = answer.get("sysparams") if isinstance(answer, Mapping) else None
    human: list[RenderableType] = []
    if isinstance(sysparams, Mapping):
        human.append(sysparams_table(sysparams))
    if isinstance(answer, Mapping) and "warnings" in answer:
        human.append(warnings_table(answer.get("warnings") or []))
    emit(ctx, json_, answer, Group(*human) if human else None)


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
    with client_for(ctx, demo) as client:
        answer = client.get("/services")
    emit(ctx, json_, answer, services_table(answer))


@services_app.command("set")
def services_set(
    ctx: typer.Context,
    pairs: Annotated[list[str], typer.Argument(help="service=server, e.g. indexer=crm2")],
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Move CRM services to other servers (uninstalled where they were, installed and started there)."""
    with client_for(ctx, demo) as client:
        answer = client.put("/services", pairs_body(pairs))
        finish(ctx, client, answer, json_=json_, wait=wait, title="CRM services")
        if not json_:
            console_of(ctx).print(services_table(client.get("/services")))


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
    with client_for(ctx, demo) as client:
        answer = client.get("/replication-engine")
    emit(ctx, json_, answer, engine_view(answer))


@re_app.command("move")
def re_move(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="The server to hold it.")],
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Move the Replication Engine: removed (and seen gone) on its holder, then installed on NODE."""
    with client_for(ctx, demo) as client:
        answer = client.put("/replication-engine", {"node": node})
        finish(
            ctx, client, answer, json_=json_, wait=wait, title="Replication Engine", human=engine_view(answer)
        )


library_app = typer.Typer(help="The shared library (DocStore) every server must reach.", no_args_is_help=True)


@library_app.command("show")
def library_show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """The library root and mail-merge templates location."""
    with client_for(ctx, demo) as client:
        answer = client.get("/library")
    emit(ctx, json_, answer, render_value(answer, title="Library"))


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
    with client_for(ctx, demo) as client:
        answer = client.post("/library/verify")
    emit(ctx, json_, answer, checks_view(answer, title="Library probe"))
    if _reports_problem(answer):
        raise SystemExit(1)


metadata_app = typer.Typer(help="CRM metadata (eware.dll and Tomcat).", no_args_is_help=True)


@metadata_app.command("refresh")
def metadata_refresh(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Reload metadata on every server, as after a customization."""
    with client_for(ctx, demo) as client:
        answer = client.post("/metadata/refresh")
    emit(ctx, json_, answer, checks_view(answer, title="Metadata reload"))
    if _reports_problem(answer):
        raise SystemExit(1)


def register(app: typer.Typer) -> None:
    """Add the client commands to the root ``crmcluster`` app."""
    app.command("status")(status)
    app.command("capacity")(capacity)
    app.command("audit")(audit)
    app.add_typer(nodes_app, name="nodes")
    app.add_typer(config_app, name="config")
    app.add_typer(services_app, name="services")
    app.add_typer(re_app, name="replication-engine")
    app.add_typer(library_app, name="library")
    app.add_typer(metadata_app, name="metadata")
    app.add_typer(upgrade_app, name="upgrade")
    app.add_typer(maintenance_app, name="maintenance")
    app.add_typer(https_app, name="https")
    app.add_typer(license_app, name="license")
    app.add_typer(tokens_app, name="tokens")
