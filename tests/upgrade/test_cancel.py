"""Cancel that really cancels, on the controller's side (issue 12, item 9): a step is recorded
cancelled only when its agent confirms the work stopped; a cancel that does not get through is
logged and tried again; and that node's restore waits until the agent reports the operation ended
— or fails, saying which operation still runs, rather than restore over it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from controller.upgrade import cancel
from controller.upgrade.runtime import orchestrator_for
from tests.upgrade.conftest import Harness
from tests.upgrade.fake_agents import Op


@pytest.fixture(autouse=True)
def _short_confirm_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cancel, "CONFIRM_WAIT", 0.3)
    monkeypatch.setattr(cancel, "LOOK_EVERY", 0.05)


async def _events(h: Harness, run_id: str, kind: str) -> list[dict[str, Any]]:
    events = await orchestrator_for(h.app.state.ctx).store.events_after(run_id, 0, limit=5000)
    return [e["data"] for e in events if e["kind"] == kind]


def _first_op_after(h: Harness, node: str, since: float, *, but: str) -> Op:
    later = [
        op for op in h.cluster.ops.values() if op.node == node and op.created > since and op.op_id != but
    ]
    return min(later, key=lambda op: op.created)


async def test_an_aborted_step_is_cancelled_only_once_the_agent_confirms(harness: Harness) -> None:
    h = harness
    h.cluster.durations = {"run_installer": 60.0}
    h.cluster.refuse_cancels = 2  # the first two cancels do not get through
    h.cluster.cancel_takes = 1.0  # then the agent takes a second to stop the work
    run = await h.plan()
    rid = run["id"]
    await h.command(rid, "start")
    installer = await h.wait_step(rid, lambda s: s["action"] == "run_installer" and s["status"] == "running")
    aborted_at = time.monotonic()
    await h.command(rid, "abort")

    op = h.cluster.ops[installer["op_id"]]
    seen_waiting = False
    while op.state == "running":  # the work has not stopped: the step must not say cancelled
        now = next(s for s in (await h.run(rid))["plan"] if s["id"] == installer["id"])
        assert now["status"] == "running", now
        seen_waiting |= "waiting for the agent to confirm" in (now["message"] or "")
        await asyncio.sleep(0.02)
        h.cluster._advance(op)
    assert seen_waiting

    done = await h.wait(rid, "aborted", "failed", "restored", timeout=60)
    assert done["status"] == "aborted", done["message"]
    step = next(s for s in done["plan"] if s["id"] == installer["id"])
    assert step["status"] == "cancelled" and "the agent confirmed the work stopped" in step["message"]
    # The refused cancels were logged (an event each) and tried again until one got through.
    assert [status for op_id, status in h.cluster.cancel_requests if op_id == op.op_id][:3] == [503, 503, 200]
    retries = [e for e in await _events(h, rid, "cancel") if e["state"] == "retrying"]
    assert [e["attempt"] for e in retries] == [1, 2] and all("503" in e["error"] for e in retries)
    assert any(e["state"] == "ended" and e["op_id"] == op.op_id for e in await _events(h, rid, "cancel"))
    # crm1's restore started only after the agent said the installer had stopped.
    assert op.ended is not None
    first = _first_op_after(h, "crm1", aborted_at, but=op.op_id)
    assert first.created >= op.ended, (first.action, first.created - op.ended)
    assert done["touched"] == ["crm1"] and {n.version for n in h.cluster.nodes.values()} == {"7.3"}


async def test_a_timed_out_step_holds_its_nodes_restore_until_it_ended(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm2", "stop_web")] = "hang"
    h.cluster.cancel_takes = 1.0
    run = await h.plan(step_timeouts={"stop_web": 0.5})
    rid = run["id"]
    await h.command(rid, "start")
    done = await h.wait(rid, "restored", "failed", "succeeded", timeout=60)
    assert done["status"] == "restored", done["message"]
    step = next(s for s in done["plan"] if s["action"] == "stop_web" and s["node"] == "crm2")
    assert step["status"] == "failed" and "timed out" in step["message"]
    assert "the agent confirmed it ended: cancelled" in step["message"]
    op = h.cluster.ops[step["op_id"]]
    assert op.state == "cancelled" and op.ended is not None
    first = _first_op_after(h, "crm2", op.created, but=op.op_id)
    assert first.created >= op.ended, (first.action, first.created - op.ended)
    waits = [d for d in await _events(h, rid, "decision") if d["decision"] == "wait_for_cancel"]
    assert [d["node"] for d in waits] == ["crm2"]


async def test_a_restore_never_runs_over_an_operation_that_will_not_stop(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm2", "stop_web")] = "hang"
    h.cluster.cancel_takes = 3600.0  # accepted, but the work does not stop
    run = await h.plan(step_timeouts={"stop_web": 0.5, "start_web": 0.5})
    rid = run["id"]
    await h.command(rid, "start")
    failed = await h.wait(rid, "failed", "restored", "succeeded", timeout=60)
    assert failed["status"] == "failed", failed["message"]
    hung = next(s for s in failed["plan"] if s["action"] == "stop_web" and s["node"] == "crm2")
    blocked = next(s for s in failed["plan"] if s["phase"] == "restore" and s["status"] == "failed")
    assert blocked["node"] == "crm2" and hung["op_id"] in blocked["message"]
    assert "must not run over it" in blocked["message"]
    assert not any(
        op.node == "crm2" and op.created > h.cluster.ops[hung["op_id"]].created
        for op in h.cluster.ops.values()
        if op.op_id != hung["op_id"]
    )
    # The work stops at last; the restore step, retried, goes on.
    h.cluster.ops[hung["op_id"]].cancel_at = time.monotonic()
    await h.command(rid, f"steps/{blocked['id']}/retry")
    done = await h.wait(rid, "restored", "failed", timeout=60)
    assert done["status"] == "restored", done["message"]
