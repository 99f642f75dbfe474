"""The downtime estimate: the checklist's "Estimate downtime for production system".

Users are out from the lock-out to their return (``returned_at``); the acceptance hold inside it is
the operator's time and is counted apart. The estimate is the critical path of the plan's waves in
that window — per wave, the longest lane's steps added up — with each step's duration taken from:

1. **measured**: the median duration of that action in earlier runs of this controller that got
   past it (a rehearsal against a test cluster counts the same), else
2. **time-out**: the step's time-out — an upper bound, and said so.

After the run the checklist carries the downtime measured beside it.

    est = estimate_downtime(steps, history=[earlier_steps, ...])
    est["downtime_seconds"], est["source"]          # 5400.0, "measured on up-1a2b3c4d5e"
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from controller.upgrade.model import Local, Step, StepStatus

#: Steps that wait for a person: not in the estimate (the hold is reported on its own).
GATES = frozenset({Local.SIGNOFF.value, Local.ACCEPTANCE.value})


def _seconds(s: Step) -> float | None:
    if s.status != StepStatus.SUCCEEDED or s.started_at is None or s.finished_at is None:
        return None
    return max(0.0, (s.finished_at - s.started_at).total_seconds())


def measured_durations(history: Iterable[tuple[str, list[Step]]]) -> dict[str, tuple[float, list[str]]]:
    """``{action: (median seconds, [run ids measured])}`` from earlier runs' succeeded steps."""
    samples: dict[str, list[float]] = {}
    runs: dict[str, set[str]] = {}
    for run_id, steps in history:
        for s in steps:
            took = _seconds(s)
            if took is None or s.action in GATES or s.phase == "restore":
                continue
            samples.setdefault(s.action, []).append(took)
            runs.setdefault(s.action, set()).add(run_id)
    return {a: (statistics.median(v), sorted(runs[a])) for a, v in samples.items()}


def window(steps: list[Step]) -> list[Step]:
    """The upgrade's steps while users are out: after the lock-out, up to their return."""
    main = [s for s in steps if s.phase != "restore"]
    lock = next((s for s in main if s.action == Local.LOCK_OUT.value), None)
    back = next((s for s in main if s.action == Local.RETURN_TO_SERVICE.value), None)
    if lock is None or back is None:
        return []
    return [s for s in main if lock.wave < s.wave < back.wave and s.action not in GATES]


def estimate_downtime(steps: list[Step], *, history: Iterable[tuple[str, list[Step]]]) -> dict[str, Any]:
    """The critical path of the lock-out window, with where each duration came from."""
    measured = measured_durations(history)
    lanes: dict[int, dict[str, float]] = {}
    used: dict[str, dict[str, Any]] = {}
    from_runs: set[str] = set()
    for s in window(steps):
        if s.action in measured:
            seconds, runs = measured[s.action]
            source = "measured"
            from_runs.update(runs)
        else:
            seconds, source = float(s.timeout or 0.0), "time-out"
        used.setdefault(s.action, {"seconds": round(seconds, 3), "source": source})
        lane = s.node or s.id
        lanes.setdefault(s.wave, {}).setdefault(lane, 0.0)
        lanes[s.wave][lane] += seconds
    total = sum(max(ls.values()) for ls in lanes.values())
    sources = {u["source"] for u in used.values()}
    if sources == {"measured"}:
        said = "measured on " + ", ".join(sorted(from_runs))
    elif sources == {"time-out"} or not sources:
        said = "the step time-outs (no earlier run measured these steps): an upper bound"
    else:
        n = sum(1 for u in used.values() if u["source"] == "time-out")
        said = (
            f"measured on {', '.join(sorted(from_runs))}; {n} action(s) never measured counted at "
            "their time-out (an upper bound)"
        )
    return {
        "downtime_seconds": round(total, 3),
        "source": said,
        "measured_runs": sorted(from_runs),
        "per_action": used,
        "excludes": "the acceptance hold (the operator's tests), reported on its own",
    }


def _t(v: Any) -> datetime | None:
    if not v:
        return None
    return datetime.fromisoformat(str(v).rstrip("Z"))


def measured_downtime(context: dict[str, Any], steps: list[Step]) -> dict[str, Any] | None:
    """After users returned: how long they were out, and the acceptance hold inside that."""
    start, back = _t(context.get("lockout_started_at")), _t(context.get("returned_at"))
    if start is None or back is None:
        return None
    gate = next((s for s in steps if s.action == Local.ACCEPTANCE.value), None)
    hold = 0.0
    if gate is not None and gate.started_at is not None and gate.finished_at is not None:
        hold = max(0.0, (gate.finished_at - gate.started_at).total_seconds())
    out = (back - start).total_seconds()
    return {
        "locked_out_seconds": round(out, 3),
        "acceptance_hold_seconds": round(hold, 3),
        "without_hold_seconds": round(out - hold, 3),
        "from": context.get("lockout_started_at"),
        "to": context.get("returned_at"),
    }
