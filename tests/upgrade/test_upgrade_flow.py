"""The upgrade end to end through the controller's API, against the fake cluster: the guide's order,
the failure policy and restore of the live environment, the operator's commands."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from config.state_schema import nodes
from tests.upgrade.conftest import Harness


def _t(v: str) -> datetime:
    return datetime.fromisoformat(v.rstrip("Z"))


async def node_states(h: Harness) -> dict[str, str]:
    async with h.app.state.ctx.state_engine.connect() as conn:
        return {r.name: r.state for r in await conn.execute(select(nodes.c.name, nodes.c.state))}


async def test_clean_upgrade_database_server_first(harness: Harness) -> None:
    h = harness
    run = await h.plan(batch_size=1)
    assert run["status"] == "planned"
    assert run["blocking"] == []
    assert {f["name"]: f["status"] for f in run["preflight"]}["license"] == "pass"
    assert h.cluster.sent_twice() == []
    assert all(s["status"] == "pending" for s in run["plan"])
    # Planning changed nothing.
    assert {n.version for n in h.cluster.nodes.values()} == {"7.3"}
    assert {n.web for n in h.cluster.nodes.values()} == {"running"}

    await h.command(run["id"], "start")
    done = await h.wait(run["id"], "succeeded", "failed", "restored")
    assert done["status"] == "succeeded", done["message"]
    assert {n.version for n in h.cluster.nodes.values()} == {"2017 R1"}
    assert h.cluster.schema_version == "2017 R1"
    assert h.cluster.registrations == 1
    assert [n.name for n in h.cluster.nodes.values() if n.replication_engine] == ["crm1"]
    assert {n.web for n in h.cluster.nodes.values()} == {"running"}
    assert h.cluster.sent_twice() == []

    installers = [s for s in done["plan"] if s["action"] == "run_installer"]
    assert [s["node"] for s in installers] == ["crm1", "crm2", "crm3"]
    db_finished = _t(installers[0]["finished_at"])
    assert all(_t(s["started_at"]) >= db_finished for s in installers[1:])
    # batch_size 1: crm3's installer starts after crm2's log was read.
    log2 = next(s for s in done["plan"] if s["action"] == "read_upgrade_log" and s["node"] == "crm2")
    assert _t(installers[2]["started_at"]) >= _t(log2["finished_at"])
    assert await node_states(h) == {"crm1": "up", "crm2": "up", "crm3": "up"}
    assert done["lockout"]["started_at"] and done["lockout"]["ended_at"]
    # Every non-database server was disconnected before the backups.
    verify = next(s for s in done["plan"] if s["action"] == "verify_disconnected")
    assert set(verify["result"]["sessions"]) <= {"crm1"}


async def test_failure_on_database_server_restores_live_environment(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm1", "run_installer")] = "fail"
    run = await h.plan()
    await h.command(run["id"], "start")
    done = await h.wait(run["id"], "restored", "failed", "succeeded")
    assert done["status"] == "restored", done["message"]
    assert done["touched"] == ["crm1"]
    assert {n.version for n in h.cluster.nodes.values()} == {"7.3"}
    assert h.cluster.schema_version == "7.3"
    assert {n.web for n in h.cluster.nodes.values()} == {"running"}
    assert await node_states(h) == {"crm1": "up", "crm2": "up", "crm3": "up"}
    restore = [s for s in done["plan"] if s["phase"] == "restore"]
    assert [s["node"] for s in restore if s["action"] == "restore_database"] == ["crm1"]
    # crm2 and crm3 were never changed: only started again.
    assert not [s for s in restore if s["action"] == "restore_program_files" and s["node"] != "crm1"]
    verify = next(s for s in restore if s["action"] == "verify_restore")
    assert verify["status"] == "succeeded"
    assert verify["result"]["records"]["differences"] == []
    # Nothing after the failed installer ran.
    assert not [s for s in done["plan"] if s["phase"] == "other_servers" and s["status"] != "pending"]
    assert h.cluster.sent_twice() == []


async def test_failure_on_a_later_node_restores_every_touched_node(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm3", "run_installer")] = "fail"
    run = await h.plan(batch_size=1)
    await h.command(run["id"], "start")
    done = await h.wait(run["id"], "restored", "failed", "succeeded")
    assert done["status"] == "restored", done["message"]
    assert done["touched"] == ["crm1", "crm2", "crm3"]
    assert {n.version for n in h.cluster.nodes.values()} == {"7.3"}
    assert h.cluster.schema_version == "7.3"
    assert [n.name for n in h.cluster.nodes.values() if n.replication_engine] == ["crm1"]
    restore = [s for s in done["plan"] if s["phase"] == "restore"]
    assert len([s for s in restore if s["action"] == "restore_database"]) == 1
    assert {s["node"] for s in restore if s["action"] == "register_dll"} == {"crm1", "crm2", "crm3"}
    assert await node_states(h) == {"crm1": "up", "crm2": "up", "crm3": "up"}


async def test_upgrade_log_error_waits_for_a_fix_or_a_restore(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm1", "log_error")] = "yes"
    run = await h.plan()  # failure_policy restore: still no restore on its own for a fix by hand
    await h.command(run["id"], "start")
    held = await h.wait(run["id"], "awaiting_fix", "restored", "failed", "succeeded")
    assert held["status"] == "awaiting_fix"
    log = next(s for s in held["plan"] if s["action"] == "read_upgrade_log" and s["node"] == "crm1")
    assert log["status"] == "awaiting_fix"
    assert "NB must be fixed" in log["message"] and "views.es" in log["message"]
    # The operator chooses restore instead of a fix.
    await h.command(run["id"], "rollback")
    done = await h.wait(run["id"], "restored", "failed")
    assert done["status"] == "restored", done["message"]
    assert {n.version for n in h.cluster.nodes.values()} == {"7.3"}


async def test_policy_pause_then_retry_runs_the_step_again(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm2", "run_installer")] = "fail"
    run = await h.plan(failure_policy="pause")
    await h.command(run["id"], "start")
    paused = await h.wait(run["id"], "paused")
    failed = next(s for s in paused["plan"] if s["status"] == "failed")
    assert failed["node"] == "crm2" and failed["action"] == "run_installer"
    assert failed["attempt"] == 0
    await h.command(run["id"], "resume", expect=409)

    # Still failing: a new attempt, a new op id, really sent.
    await h.command(run["id"], f"steps/{failed['id']}/retry")
    paused = await h.wait(run["id"], "paused")
    again = next(s for s in paused["plan"] if s["id"] == failed["id"])
    assert again["attempt"] == 1 and again["status"] == "failed"
    assert again["op_id"] != failed["op_id"]

    del h.cluster.faults[("crm2", "run_installer")]
    await h.command(run["id"], f"steps/{failed['id']}/retry")
    done = await h.wait(run["id"], "succeeded", "paused", "failed")
    assert done["status"] == "succeeded", done["message"]
    step = next(s for s in done["plan"] if s["id"] == failed["id"])
    assert step["attempt"] == 2
    assert {h.cluster.sent[f"{run['id']}.{failed['id']}.{i}"] for i in range(3)} == {1}
    assert {n.version for n in h.cluster.nodes.values()} == {"2017 R1"}


async def test_pause_after_running_step_then_resume(harness: Harness) -> None:
    h = harness
    h.cluster.step_time = 0.05
    run = await h.plan()
    await h.command(run["id"], "start")
    await h.wait_step(run["id"], lambda s: s["phase"] == "backup" and s["status"] == "running")
    await h.command(run["id"], "pause")
    paused = await h.wait(run["id"], "paused")
    assert not [s for s in paused["plan"] if s["status"] == "running"]
    assert not [s for s in paused["plan"] if s["action"] == "run_installer" and s["status"] != "pending"]
    sent = len(h.cluster.sent)
    run_again = await h.run(run["id"])
    assert run_again["status"] == "paused" and len(h.cluster.sent) == sent
    await h.command(run["id"], "resume")
    done = await h.wait(run["id"], "succeeded", "failed", "restored")
    assert done["status"] == "succeeded"
    assert h.cluster.sent_twice() == []


async def test_signoff_gate_waits_for_approval(harness: Harness) -> None:
    h = harness
    run = await h.plan(require_signoff=True)
    await h.command(run["id"], "approve", expect=409)
    sent_by_preflight = set(h.cluster.sent)
    await h.command(run["id"], "start")
    waiting = await h.wait(run["id"], "awaiting_approval")
    assert set(h.cluster.sent) == sent_by_preflight  # nothing done before the sign-off
    assert waiting["plan"][0]["action"] == "signoff"
    approved = await h.command(run["id"], "approve")
    assert approved["plan"][0]["status"] == "succeeded"
    assert approved["plan"][0]["result"]["approved_by"] == "admin"
    done = await h.wait(run["id"], "succeeded", "failed", "restored")
    assert done["status"] == "succeeded"


async def test_abort_cancels_the_running_step_then_restores(harness: Harness) -> None:
    h = harness
    h.cluster.durations = {"run_installer": 30.0}
    run = await h.plan()
    await h.command(run["id"], "start")
    await h.wait_step(run["id"], lambda s: s["action"] == "run_installer" and s["status"] == "running")
    await h.command(run["id"], "abort")
    done = await h.wait(run["id"], "aborted", "failed", "restored")
    assert done["status"] == "aborted", done["message"]
    installer = next(s for s in done["plan"] if s["action"] == "run_installer")
    assert installer["status"] == "cancelled"
    assert h.cluster.ops[installer["op_id"]].state == "cancelled"
    assert {n.version for n in h.cluster.nodes.values()} == {"7.3"}
    assert await node_states(h) == {"crm1": "up", "crm2": "up", "crm3": "up"}


async def test_rollback_after_success_restores_old_version(harness: Harness) -> None:
    h = harness
    run = await h.plan(batch_size=2)
    await h.command(run["id"], "start")
    succeeded = await h.wait(run["id"], "succeeded", "restored", "failed")
    assert succeeded["status"] == "succeeded"
    returned_at = succeeded["returned_at"]
    # Users are back: a rollback loses what they wrote since; refused until that is accepted.
    refused = await h.client.post(f"/api/v1/upgrades/{run['id']}/rollback")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "data_loss"
    assert refused.json()["error"]["details"]["window"]["since"] == returned_at
    wrong = await h.client.post(
        f"/api/v1/upgrades/{run['id']}/rollback", json={"accept_data_loss_since": "2020-01-01T00:00:00Z"}
    )
    assert wrong.status_code == 409
    assert (await h.run(run["id"]))["status"] == "succeeded"
    await h.command(run["id"], "rollback", body={"accept_data_loss_since": returned_at})
    done = await h.wait(run["id"], "restored", "failed")
    assert done["data_loss_accepted"]["since"] == returned_at and done["data_loss_accepted"]["by"]
    assert done["status"] == "restored", done["message"]
    assert {n.version for n in h.cluster.nodes.values()} == {"7.3"}
    assert h.cluster.schema_version == "7.3"
    await h.command(run["id"], "rollback", expect=409)


async def test_agent_that_stops_answering_fails_the_step_after_its_timeout(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm2", "stop_web")] = "hang"
    run = await h.plan(step_timeouts={"stop_web": 0.5})
    await h.command(run["id"], "start")
    done = await h.wait(run["id"], "restored", "failed", "succeeded")
    step = next(s for s in done["plan"] if s["action"] == "stop_web" and s["node"] == "crm2")
    assert step["status"] == "failed" and "timed out" in step["message"]
    assert done["status"] == "restored"
    assert done["touched"] == []
    assert h.cluster.ops[step["op_id"]].state == "cancelled"


async def test_interrupted_operation_follows_the_failure_policy(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm1", "backup_database")] = "interrupt"
    run = await h.plan(failure_policy="pause")
    await h.command(run["id"], "start")
    paused = await h.wait(run["id"], "paused")
    step = next(s for s in paused["plan"] if s["status"] == "failed")
    assert step["action"] == "backup_database" and "interrupted" in step["message"]


async def test_rollback_of_a_paused_run_restores(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm2", "run_installer")] = "fail"
    run = await h.plan(failure_policy="pause")
    await h.command(run["id"], "start")
    await h.wait(run["id"], "paused")
    await h.command(run["id"], "rollback")
    done = await h.wait(run["id"], "restored", "failed")
    assert done["status"] == "restored", done["message"]
    assert done["touched"] == ["crm1", "crm2"]
    assert {n.version for n in h.cluster.nodes.values()} == {"7.3"}
    assert h.cluster.schema_version == "7.3"
    await h.command(run["id"], "resume", expect=409)


async def test_failed_restore_step_says_what_and_is_retried(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm1", "run_installer")] = "fail"
    h.cluster.faults[("crm1", "restore_registry")] = "fail"
    run = await h.plan()
    await h.command(run["id"], "start")
    failed = await h.wait(run["id"], "failed", "restored")
    assert failed["status"] == "failed"
    assert "restore stopped" in failed["message"] and "restore_registry" in failed["message"]
    step = next(s for s in failed["plan"] if s["phase"] == "restore" and s["status"] == "failed")
    del h.cluster.faults[("crm1", "restore_registry")]
    await h.command(run["id"], f"steps/{step['id']}/retry")
    done = await h.wait(run["id"], "restored", "failed")
    assert done["status"] == "restored", done["message"]
    assert next(s for s in done["plan"] if s["id"] == step["id"])["attempt"] == 1
    assert {n.version for n in h.cluster.nodes.values()} == {"7.3"}


async def test_abort_while_awaiting_signoff_changes_nothing(harness: Harness) -> None:
    h = harness
    run = await h.plan(require_signoff=True)
    await h.command(run["id"], "start")
    await h.wait(run["id"], "awaiting_approval")
    sent = set(h.cluster.sent)
    await h.command(run["id"], "abort")
    done = await h.wait(run["id"], "aborted", "restored", "failed")
    assert done["status"] == "aborted" and "nothing had changed" in done["message"]
    assert set(h.cluster.sent) == sent
    assert not [s for s in done["plan"] if s["phase"] == "restore"]
