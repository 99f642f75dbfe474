"""Following the controller's jobs: multi-step cluster changes (join, remove, drain, moves).

``POST /nodes`` (join), ``DELETE /nodes/{name}``, ``POST /nodes/{name}/drain``, ``PUT /services``
and ``PUT /replication-engine`` answer with a job (``{"id", "kind", "status", "steps": [...]}``)
that runs on in the controller; :func:`wait_job` polls ``GET /jobs/{id}`` until it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from crmcluster.client.http import ControllerClient
from crmcluster.client.render import hhmmss, short, styled

JOB_RUNNING = frozenset({"running", "pending"})


def job_of(answer: Any) -> dict[str, Any] | None:
    """The job in an answer: the answer itself, or its ``job`` field."""
    if not isinstance(answer, Mapping):
        return None
    if isinstance(answer.get("job"), Mapping):
        return dict(answer["job"])
    if "kind" in answer and "steps" in answer and "id" in answer:
        return dict(answer)
    return None


def render_job(job: Mapping[str, Any]) -> RenderableType:
    head = Text.assemble(
        ("Job ", "bold"),
        (str(job.get("id")), "bold"),
        f"  {short(job.get('kind'))} {short(job.get('target'))}  ",
        styled(job.get("status")),
        f"  {job['message']}" if job.get("message") else "",
    )
    steps = job.get("steps") or []
    if not steps:
        return head
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("#", "server", "action", "status", "finished", "message"):
        table.add_column(col)
    for s in steps:
        table.add_row(
            short(s.get("seq")),
            short(s.get("node")),
            short(s.get("action")),
            styled(s.get("status")),
            hhmmss(s.get("finished_at")),
            short(s.get("message")),
        )
    return Group(head, table)


def wait_job(
    client: ControllerClient,
    job: Mapping[str, Any],
    *,
    console: Console | None,
    interval: float = 0.5,
    timeout: float = 1800.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the job until it is no longer running (or ``timeout`` passes); its last record."""
    current = dict(job)
    deadline = clock() + timeout
    status_line = console.status(f"job {current.get('id')}: {current.get('kind')} …") if console else None
    if status_line is not None:
        status_line.start()
    try:
        while str(current.get("status")) in JOB_RUNNING and clock() < deadline:
            sleep(interval)
            current = client.get(f"/jobs/{current['id']}")
            if status_line is not None:
                running = [s for s in current.get("steps") or [] if s.get("status") == "running"]
                what = f"{running[0].get('action')} on {running[0].get('node')}" if running else "…"
                status_line.update(f"job {current.get('id')}: {current.get('kind')} — {what}")
    finally:
        if status_line is not None:
            status_line.stop()
    return current
