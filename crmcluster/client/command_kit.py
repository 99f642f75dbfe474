"""What every client command shares: options, finding the controller, printing, following jobs.

Commands get their controller client from :func:`client_for` (``--demo DIR``, else
``CRMCLUSTER_CONTROLLER_URL`` + ``CRMCLUSTER_ADMIN_TOKEN``, else ``./crmcluster-data/demo.json``),
print with :func:`emit` (a table for people, the JSON answer with ``--json``) and turn client
errors into one line on stderr and an exit code: 1 the operation failed, 2 a usage problem.
Tests (or an embedding program) pass :class:`ClientOptions` as the Typer context's ``obj``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, RenderableType

from crmcluster.client.http import ClientError, ControllerClient
from crmcluster.client.jobs import job_of, render_job, wait_job
from crmcluster.client.render import render_value
from crmcluster.client.target import NoTarget, resolve_target
from crmcluster.client.values import BadArgument

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the controller's JSON answer (for scripts).")]
DemoOpt = Annotated[
    Path | None,
    typer.Option("--demo", help="Talk to the demo whose data directory (or demo.json) this is."),
]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends.")]


@dataclass
class ClientOptions:
    """What tests (or an embedding program) inject through ``ctx.obj``."""

    transport: httpx.BaseTransport | None = None
    env: Mapping[str, str] | None = None
    console: Console | None = None


def options_of(ctx: typer.Context) -> ClientOptions:
    return ctx.obj if isinstance(ctx.obj, ClientOptions) else ClientOptions()


def console_of(ctx: typer.Context) -> Console:
    return options_of(ctx).console or Console()


def fail(message: str, code: int) -> SystemExit:
    typer.echo(f"crmcluster: {message}", err=True)
    return SystemExit(code)


@contextlib.contextmanager
def client_for(ctx: typer.Context, demo: Path | None) -> Iterator[ControllerClient]:
    """A client for the configured controller; client errors become one line and an exit code."""
    opts = options_of(ctx)
    try:
        target = resolve_target(demo, opts.env)
        with ControllerClient(target, transport=opts.transport) as client:
            yield client
    except (NoTarget, BadArgument) as exc:
        raise fail(str(exc), 2) from None
    except ClientError as exc:
        raise fail(str(exc), 1) from None


def emit(ctx: typer.Context, as_json: bool, data: Any, human: RenderableType | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        console_of(ctx).print(human if human is not None else render_value(data))


def finish(
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
        job = wait_job(client, job, console=None if json_ else console_of(ctx))
        if isinstance(answer, Mapping) and isinstance(answer.get("job"), Mapping):
            answer = {**answer, "job": job}
        else:
            answer = job
    if json_:
        emit(ctx, True, answer)
    else:
        console = console_of(ctx)
        if human is not None:
            console.print(human)
        elif job is None:
            console.print(render_value(answer, title=title))
        if job is not None:
            console.print(render_job(job))
    if job is not None and wait and str(job.get("status")) != "succeeded":
        raise SystemExit(1)
