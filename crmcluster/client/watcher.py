"""``crmcluster upgrade watch``: follow a run through its event stream, as progress bars.

The controller's ``GET /upgrades/{id}/events`` (server-sent events, replayable with
``Last-Event-ID``) says *that* something changed; the run itself (``GET /upgrades/{id}``) says
*what* the plan looks like now, so the watcher folds both into one picture:

- one bar per phase of the guide's order (freeze, back up, baseline, database server, …) and
  one bar per server, counting finished steps out of planned ones (restore steps appear as
  they are planned);
- a line per finished or failed step above the bars, so a log of the run stays on screen;
- exit code 0 when the run ``succeeded``, 1 when it ends ``failed``, ``restored`` or ``aborted``.

:class:`RunProgress` is the pure part (snapshot in, counts and notes out) and is tested alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from crmcluster.client.http import ControllerClient, SseEvent
from crmcluster.client.render import hhmmss, run_header, short, styled

#: Run statuses after which nothing more happens.
TERMINAL = frozenset({"succeeded", "failed", "restored", "aborted"})
#: Run statuses that wait for an operator.
WAITING = frozenset(
    {"paused", "awaiting_approval", "awaiting_fix", "awaiting_acceptance", "awaiting_operator"}
)
#: Step statuses that count as finished for the bars.
STEP_FINISHED = frozenset(
    {"succeeded", "skipped", "failed", "cancelled", "interrupted", "restored", "done", "ok"}
)
STEP_FAILED = frozenset({"failed", "cancelled", "interrupted"})


def _rank(status: Any) -> int:
    return 2 if status in STEP_FINISHED else 1 if status == "running" else 0


def _older(event_step: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """True when an event describes an earlier state of the step than the snapshot already has.

    A stream replayed from the start re-sends ``running`` for steps long finished; a retry is a
    new ``attempt`` and is never older.
    """
    attempt, known = event_step.get("attempt"), current.get("attempt")
    if isinstance(attempt, int) and isinstance(known, int) and attempt != known:
        return attempt < known
    return _rank(event_step.get("status")) < _rank(current.get("status"))


@dataclass
class Tally:
    done: int = 0
    total: int = 0
    failed: int = 0
    running: str = ""


@dataclass
class RunProgress:
    """The watcher's model: the latest run snapshot folded into per-phase and per-server tallies."""

    run: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    _announced: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.run.get("status") or "")

    def absorb_run(self, run: Mapping[str, Any]) -> list[str]:
        """Take a full run snapshot; return notes for steps that finished since the last one."""
        self.run = dict(run)
        plan = run.get("plan") or run.get("steps") or []
        self.order = []
        for step in plan:
            sid = str(step.get("id"))
            self.order.append(sid)
            self.steps[sid] = dict(step)
        self.steps = {sid: self.steps[sid] for sid in self.order}
        return self._notes()

    def absorb_event(self, event: SseEvent) -> None:
        """Apply what an event carries (a step's new status, the run's status) without a fetch.

        Notes wait for the next full snapshot, which carries the step's message and times.
        """
        data = event.data if isinstance(event.data, Mapping) else {}
        # The controller's events (controller/upgrade/store.py): ``step`` carries the step's id in
        # ``step`` beside its new status; ``run`` and ``end`` carry the run's ``status``.
        sid = data.get("step")
        if event.event == "step" and isinstance(sid, str) and sid in self.steps:
            step = {k: v for k, v in data.items() if k in ("status", "attempt", "message")}
            current = self.steps[sid]
            if not _older(step, current):
                current.update(step)
        if event.event in ("run", "end") and isinstance(data.get("status"), str):
            self.run["status"] = data["status"]

    def _notes(self) -> list[str]:
        notes = []
        for sid in self.order:
            step = self.steps[sid]
            status = str(step.get("status") or "")
            if status in STEP_FINISHED and self._announced.get(sid) != status:
                self._announced[sid] = status
                mark = "✗" if status in STEP_FAILED else ("-" if status == "skipped" else "✓")
                where = f" {step['node']}" if step.get("node") else ""
                msg = f": {step['message']}" if step.get("message") and status in STEP_FAILED else ""
                when = hhmmss(step.get("finished_at"))
                notes.append(
                    f"{mark} {when} {step.get('phase', '?')}{where} {step.get('action', '?')} {status}{msg}"
                )
        return notes

    def _tallies(self, key: str) -> dict[str, Tally]:
        out: dict[str, Tally] = {}
        for sid in self.order:
            step = self.steps[sid]
            name = step.get(key)
            if not name:
                continue
            t = out.setdefault(str(name), Tally())
            t.total += 1
            status = str(step.get("status") or "")
            if status in STEP_FINISHED:
                t.done += 1
            if status in STEP_FAILED:
                t.failed += 1
            if status == "running":
                t.running = str(step.get("action") or "")
        return out

    def phases(self) -> dict[str, Tally]:
        return self._tallies("phase")

    def nodes(self) -> dict[str, Tally]:
        return self._tallies("node")


class ProgressView:
    """Rich progress bars for a :class:`RunProgress`: phases first, then servers."""

    def __init__(self) -> None:
        columns = (
            TextColumn("{task.description:<26}"),
            BarColumn(bar_width=32),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
        )
        self.phase_bars = Progress(*columns, auto_refresh=False)
        self.node_bars = Progress(*columns, auto_refresh=False)
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self.header: Text = Text("")

    def _bar(self, bars: Progress, kind: str, name: str, tally: Tally, *, ended: bool) -> None:
        key = (kind, name)
        if ended and not tally.failed and tally.done < tally.total:
            note = Text(f"{tally.total - tally.done} not run", style="dim")
        elif tally.failed:
            note = Text(f"{tally.failed} failed", style="bold red")
        elif tally.running:
            note = Text(f"running {tally.running}", style="cyan")
        elif tally.total and tally.done == tally.total:
            note = Text("done", style="green")
        else:
            note = Text("")
        if key not in self._tasks:
            self._tasks[key] = bars.add_task(f"{kind} {name}", total=tally.total, note=note)
        bars.update(self._tasks[key], completed=tally.done, total=tally.total, note=note)

    def update(self, model: RunProgress) -> None:
        self.header = run_header(model.run)
        ended = model.status in TERMINAL
        for name, tally in model.phases().items():
            self._bar(self.phase_bars, "phase", name, tally, ended=ended)
        for name, tally in model.nodes().items():
            self._bar(self.node_bars, "server", name, tally, ended=ended)

    def __rich__(self) -> RenderableType:
        return Group(
            self.header,
            Text("Phases", style="bold"),
            self.phase_bars.get_renderable(),
            Text("Servers", style="bold"),
            self.node_bars.get_renderable(),
        )


def next_step_hint(run: Mapping[str, Any]) -> str | None:
    status = run.get("status")
    rid = run.get("id")
    if status == "awaiting_approval":
        return f"awaiting sign-off: `crmcluster upgrade approve {rid}` continues, `upgrade abort {rid}` stops"
    if status == "awaiting_acceptance":
        return (
            f"acceptance hold: users are still out; test, then `crmcluster upgrade accept {rid} "
            f'--tick ROW --note "…"` lets them return (`upgrade show {rid}` lists the rows)'
        )
    if status == "awaiting_fix":
        return (
            f'awaiting a fix by hand: `crmcluster upgrade resolve {rid} STEP --note "…"`, then '
            f"`upgrade resume {rid}` (or `upgrade rollback {rid}`)"
        )
    if status == "paused" and run.get("alert"):
        since = run.get("returned_at")
        return (
            f"ALERT: users are back since {since}; nothing is restored on its own: `crmcluster upgrade "
            f"retry {rid} STEP`, or `upgrade rollback {rid} --accept-data-loss-since {since}`"
        )
    if status == "awaiting_operator":
        lines = ["awaiting an operator:"]
        for w in run.get("awaiting_operator") or []:
            lines.append(f"  {w.get('node')} {w.get('action')} ({w.get('step')}), by hand:")
            lines += [f"    {i}. {c}" for i, c in enumerate(w.get("choices") or [], 1)]
            lines.append(f"    then `crmcluster upgrade confirm {rid} {w.get('step')} --note '…'`")
        return "\n".join(lines)
    if status == "paused":
        return (
            f"paused: `crmcluster upgrade resume {rid}`, `upgrade retry {rid} STEP` "
            f"or `upgrade rollback {rid}`"
        )
    return None


def watch_run(
    client: ControllerClient,
    run_id: str,
    *,
    console: Console,
    json_lines: bool = False,
    fetch_interval: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    accept: str | None = None,
) -> dict[str, Any]:
    """Follow run ``run_id`` until it ends; return its last snapshot. With ``accept`` (a note), the
    acceptance hold is accepted as soon as the run reaches it (``--yes``), no row ticked."""
    model = RunProgress()
    notes: list[str] = model.absorb_run(client.get(f"/upgrades/{run_id}"))
    last_fetch = clock()
    view = ProgressView()
    hinted: set[str] = set()
    accepted = False

    def refresh(force: bool = False) -> None:
        nonlocal last_fetch, accepted
        if force or clock() - last_fetch >= fetch_interval:
            last_fetch = clock()
            notes.extend(model.absorb_run(client.get(f"/upgrades/{run_id}")))
        if accept is not None and not accepted and model.status == "awaiting_acceptance":
            accepted = True
            client.post(f"/upgrades/{run_id}/accept", {"rows": [], "note": accept})
            notes.append(f"accepted the acceptance hold (--yes): {accept}")

    def stop() -> bool:
        if model.status not in TERMINAL:
            refresh(force=True)
        return model.status in TERMINAL

    if json_lines:
        if model.status not in TERMINAL:
            for ev in client.events(f"/upgrades/{run_id}/events", should_stop=stop, sleep=sleep):
                print(json.dumps({"id": ev.id, "event": ev.event, "data": ev.data}), flush=True)
                model.absorb_event(ev)
        refresh(force=True)
        print(json.dumps({"event": "end", "run": model.run}), flush=True)
        return model.run

    def flush(out: Console) -> None:
        for note in notes:
            out.print(note, highlight=False)
        notes.clear()
        hint = next_step_hint(model.run)
        if hint and hint not in hinted:
            hinted.add(hint)
            out.print(Text(hint, style="yellow"))
        elif not hint:
            hinted.clear()

    flush(console)
    view.update(model)
    with Live(view, console=console, refresh_per_second=8, transient=False) as live:
        if model.status not in TERMINAL:
            for ev in client.events(f"/upgrades/{run_id}/events", should_stop=stop, sleep=sleep):
                model.absorb_event(ev)
                refresh()
                flush(live.console)
                view.update(model)
                live.refresh()
        refresh(force=True)
        flush(live.console)
        view.update(model)
        live.refresh()
    if not console.is_terminal:
        console.line()
    final = model.run
    console.print(
        Text.assemble("upgrade ", str(final.get("id")), " ended ", styled(final.get("status")))
        if model.status in TERMINAL
        else Text(f"stopped watching; the run is {short(model.status)}")
    )
    return final
