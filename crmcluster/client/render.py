"""Tables for people: the controller's JSON answers drawn with Rich, in DESIGN.md's vocabulary.

Known shapes (the cluster, capacity, an upgrade run with its preflight and plan) get tables
made for them; anything else is drawn by :func:`render_value` as key/value tables, so a new
field in an answer shows up rather than disappearing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "up": "bold green",
    "draining": "yellow",
    "maintenance": "magenta",
    "upgrading": "cyan",
    "down": "bold red",
}
STATUS_STYLES = {
    "succeeded": "green",
    "ok": "green",
    "pass": "green",
    "passed": "green",
    "running": "cyan",
    "planned": "blue",
    "pending": "dim",
    "skipped": "dim",
    "paused": "yellow",
    "awaiting_approval": "yellow",
    "awaiting_fix": "yellow",
    "awaiting_acceptance": "yellow",
    "awaiting_operator": "bold yellow",
    "warning": "yellow",
    "warn": "yellow",
    "overridden": "yellow",
    "restoring": "magenta",
    "restored": "magenta",
    "failed": "bold red",
    "fail": "bold red",
    "error": "bold red",
    "blocker": "bold red",
    "aborted": "red",
    "cancelled": "red",
    "interrupted": "red",
}


def styled(word: Any, styles: Mapping[str, str] = STATUS_STYLES) -> Text:
    text = "" if word is None else str(word)
    return Text(text, style=styles.get(text.lower(), ""))


def short(value: Any) -> str:
    """A cell: scalars as they are, lists joined, mappings as ``k=v``; ``-`` for nothing."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(short(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={short(v)}" for k, v in value.items())
    return str(value)


def hhmmss(value: Any) -> str:
    """``2026-11-28T23:59:01.123456`` → ``23:59:01`` (times stay in UTC, as the API gives them)."""
    if not value:
        return "-"
    text = str(value)
    if "T" in text:
        return text.split("T", 1)[1][:8]
    return text


def render_value(value: Any, *, title: str | None = None) -> RenderableType:
    """Any JSON value as tables: a list of objects is a table, an object is key/value rows."""
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        columns: list[str] = []
        for row in value:
            for key in row:
                if key not in columns:
                    columns.append(str(key))
        table = Table(title=title, title_justify="left")
        for col in columns:
            table.add_column(col.replace("_", " "))
        for row in value:
            table.add_row(*[styled(short(row.get(c))) for c in columns])
        return table
    if isinstance(value, Mapping):
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        nested: list[RenderableType] = []
        for key, v in value.items():
            if isinstance(v, list) and v and all(isinstance(i, Mapping) for i in v):
                nested.append(render_value(v, title=str(key).replace("_", " ")))
            else:
                table.add_row(str(key).replace("_", " "), styled(short(v)))
        return Group(table, *nested) if nested else table
    return Text(short(value))


def checks_view(answer: Any, *, title: str) -> RenderableType:
    """A per-server check (``{"ok", "nodes": [{name, ok, message}]}``): one row per server."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("nodes"), list):
        return render_value(answer, title=title)
    table = Table(title=title, title_justify="left")
    for col in ("server", "ok", "message"):
        table.add_column(col)
    for row in answer["nodes"]:
        if isinstance(row, Mapping):
            ok = row.get("ok")
            table.add_row(
                str(row.get("name")),
                Text(short(ok), style="green" if ok else "bold red"),
                short(row.get("message")),
            )
    extra = {
        k: v for k, v in answer.items() if k not in ("nodes", "ok") and not isinstance(v, list | Mapping)
    }
    for key in ("paths", "confirmed"):
        if key in answer:
            extra[key] = answer[key]
    return Group(table, render_value(extra)) if extra else table


def nodes_table(nodes: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title="Servers", title_justify="left")
    for col in ("server", "roles", "state", "version", "logged on", "weight", "heartbeat", "fqdn"):
        table.add_column(col, justify="right" if col in ("logged on", "weight") else "left")
    for n in nodes:
        weight = n.get("weight")
        table.add_row(
            Text(str(n.get("name", "?")), style="bold"),
            short(n.get("roles")),
            styled(n.get("state"), STATE_STYLES),
            short(n.get("version")),
            short(n.get("logged_on")),
            f"{float(weight):.2f}" if isinstance(weight, int | float) else short(weight),
            hhmmss(n.get("last_heartbeat")),
            short(n.get("fqdn")),
        )
    return table


def warnings_table(warnings: Iterable[Mapping[str, Any]]) -> RenderableType:
    items = list(warnings)
    if not items:
        return Text("No warnings.", style="green")
    table = Table(title="Warnings", title_justify="left", title_style="bold yellow")
    table.add_column("code", style="yellow")
    table.add_column("message")
    table.add_column("servers")
    for w in items:
        table.add_row(short(w.get("code")), short(w.get("message")), short(w.get("nodes")))
    return table


SYSPARAM_LABELS = {
    "server_names": "CRM Server Names",
    "do_load_balancing": "Do Load Balancing",
    "dtls_server_name": "DTLS Server Name",
    "fq_server_names": "Fully qualified CRM Web Server Names",
    "http_port": "HTTPS port",
    "outlook_port": "Outlook port",
    "doc_store": "Library root (DocStore)",
    "doc_templates": "Mail-merge templates (DocTemplates)",
}


def sysparams_table(sysparams: Mapping[str, Any]) -> Table:
    table = Table(title="Custom_SysParams", title_justify="left")
    table.add_column("setting")
    table.add_column("field", style="dim")
    table.add_column("value")
    for key, value in sysparams.items():
        table.add_row(SYSPARAM_LABELS.get(key, key), key, short(value))
    return table


def render_status(cluster: Mapping[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [nodes_table(cluster.get("nodes") or [])]
    if isinstance(cluster.get("sysparams"), Mapping):
        sp = cluster["sysparams"]
        parts.append(
            Text.assemble(
                ("Load balancing: ", "bold"),
                "Sage CRM" if sp.get("do_load_balancing") else "the crmcluster balancer",
                ("   DTLS server: ", "bold"),
                short(sp.get("dtls_server_name")),
            )
        )
    parts.append(warnings_table(cluster.get("warnings") or []))
    return Group(*parts)


def render_capacity(cap: Mapping[str, Any]) -> RenderableType:
    table = Table(title="Connections a metadata reload needs", title_justify="left")
    table.add_column("server")
    table.add_column("DLL connections", justify="right")
    table.add_column("Tomcat pool", justify="right")
    for n in cap.get("nodes") or []:
        table.add_row(str(n.get("name")), short(n.get("dll_connections")), short(n.get("tomcat_pool")))
    headroom = cap.get("headroom")
    ok = isinstance(headroom, int | float) and headroom >= 0
    summary = Text.assemble(
        ("required ", "bold"),
        short(cap.get("required")),
        ("   max connections ", "bold"),
        short(cap.get("max_connections")),
        ("   headroom ", "bold"),
        (short(headroom), "green" if ok else "bold red"),
    )
    return Group(table, summary)


def finding_result(f: Mapping[str, Any]) -> str:
    for key in ("status", "result", "severity", "level"):
        if isinstance(f.get(key), str):
            return str(f[key])
    for key in ("ok", "passed"):
        if isinstance(f.get(key), bool):
            return "ok" if f[key] else "failed"
    return "-"


def preflight_table(findings: Any) -> RenderableType:
    if isinstance(findings, Mapping):
        inner = findings.get("findings") or findings.get("checks")
        if isinstance(inner, list):
            findings = inner
        else:
            findings = [
                {"name": k, **v} if isinstance(v, Mapping) else {"name": k, "status": v}
                for k, v in findings.items()
            ]
    table = Table(title="Preflight", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("servers")
    table.add_column("message")
    for f in findings or []:
        if not isinstance(f, Mapping):
            table.add_row(short(f), "-", "-", "-")
            continue
        name = f.get("name") or f.get("code") or f.get("check") or f.get("id")
        table.add_row(
            short(name),
            styled(finding_result(f)),
            short(f.get("nodes") or f.get("node")),
            short(f.get("message")),
        )
    return table


def plan_table(plan: Iterable[Mapping[str, Any]], *, title: str = "Plan") -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("#", "phase", "server", "action", "status", "try", "message"):
        table.add_column(col, justify="right" if col in ("#", "try") else "left")
    for i, step in enumerate(plan, 1):
        table.add_row(
            str(i),
            short(step.get("phase")),
            short(step.get("node")),
            short(step.get("action")),
            styled(step.get("status")),
            short(step.get("attempt")),
            short(step.get("message")),
        )
    return table


def run_header(run: Mapping[str, Any]) -> Text:
    return Text.assemble(
        ("Upgrade ", "bold"),
        (str(run.get("id", "?")), "bold"),
        "  ",
        styled(run.get("status")),
        "  ",
        f"{short(run.get('from_version'))} → {short(run.get('target_version'))}",
        ("  " + str(run["message"])) if run.get("message") else "",
    )


def render_run(run: Mapping[str, Any], *, show_plan: bool = True) -> RenderableType:
    parts: list[RenderableType] = [run_header(run), preflight_table(run.get("preflight") or [])]
    if show_plan:
        parts.append(plan_table(run.get("plan") or run.get("steps") or []))
    alert = run.get("alert")
    if alert and run.get("status") == "paused":
        parts.append(
            Text(
                f"ALERT: users are back since {run.get('returned_at')} and {alert.get('message')}; "
                "nothing is restored on its own",
                style="bold red",
            )
        )
    if run.get("status") == "awaiting_acceptance" and isinstance(run.get("acceptance"), Mapping):
        parts.append(testing_table(run["acceptance"].get("table") or []))
    return Group(*parts)


def testing_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """The acceptance hold's "Testing a live upgrade" table: crmcluster's rows and the operator's."""
    table = Table(title="Testing a live upgrade (acceptance hold)", title_justify="left")
    for col in ("row", "test action", "by", "success"):
        table.add_column(col)
    for r in rows:
        status = str(r.get("status") or "")
        style = {"passed": "green", "failed": "bold red", "ticked": "green"}.get(status, "yellow")
        table.add_row(short(r.get("id")), str(r.get("test") or ""), short(r.get("by")), Text(status, style))
    return table


def runs_table(runs: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title="Upgrades", title_justify="left")
    for col in ("id", "status", "from", "to", "created", "finished", "message"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            short(r.get("id")),
            styled(r.get("status")),
            short(r.get("from_version")),
            short(r.get("target_version")),
            short(r.get("created_at")),
            short(r.get("finished_at")),
            short(r.get("message")),
        )
    return table
