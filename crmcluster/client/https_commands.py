"""``crmcluster https show|enable|disable``: the cluster's HTTPS switch (``/api/v1/https``):
HTTPPort and OutlookPort in Custom_SysParams, every server's SSL binding checked first, the
balancer's redirects following."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from crmcluster.client.command_kit import DemoOpt, JsonOpt, client_for, emit
from crmcluster.client.render import short, styled

https_app = typer.Typer(help="Users reach the web servers over HTTPS (or HTTP).", no_args_is_help=True)
PortOpt = Annotated[int | None, typer.Option("--port", help="The SSL binding's port (default 443; off: 80).")]
OutlookOpt = Annotated[int | None, typer.Option("--outlook-port", help="OutlookPort (default: --port).")]


def https_view(answer: Any) -> RenderableType:
    if not isinstance(answer, Mapping):
        return Text(short(answer))
    head = Text.assemble(
        ("HTTPS: ", "bold"),
        styled("on" if answer.get("enabled") else "off"),
        f"   HTTPPort {short(answer.get('http_port'))}   OutlookPort {short(answer.get('outlook_port'))}",
    )
    table = Table(title="Where users are sent", title_justify="left")
    table.add_column("server")
    table.add_column("address")
    table.add_column("binding")
    checks = answer.get("checks") or {}
    for server, address in (answer.get("addresses") or {}).items():
        table.add_row(server, short(address), short((checks.get(server) or {}).get("message")))
    return Group(head, table)


@https_app.command("show")
def show(ctx: typer.Context, json_: JsonOpt = False, demo: DemoOpt = None) -> None:
    """Whether users reach the servers over HTTPS, and each server's address."""
    with client_for(ctx, demo) as client:
        answer = client.get("/https")
    emit(ctx, json_, answer, https_view(answer))


def _put(ctx: typer.Context, demo: Any, json_: bool, body: dict[str, Any]) -> None:
    with client_for(ctx, demo) as client:
        answer = client.put("/https", body)
    emit(ctx, json_, answer, https_view(answer))


@https_app.command("enable")
def enable(
    ctx: typer.Context,
    port: PortOpt = None,
    outlook_port: OutlookOpt = None,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Switch to HTTPS: refused while an FQ or DTLS name is an address, or a server's binding does
    not answer on the port; then HTTPPort and OutlookPort are written."""
    _put(ctx, demo, json_, {"enabled": True, "port": port, "outlook_port": outlook_port})


@https_app.command("disable")
def disable(
    ctx: typer.Context,
    port: PortOpt = None,
    outlook_port: OutlookOpt = None,
    json_: JsonOpt = False,
    demo: DemoOpt = None,
) -> None:
    """Back to HTTP (HTTPPort 80 unless --port)."""
    _put(ctx, demo, json_, {"enabled": False, "port": port, "outlook_port": outlook_port})
