"""Driving one run: waves of steps, each step persisted before and after it runs.

The executor is level-triggered (kopf's habit): every pass it reads the run afresh, finds the first
wave with a step not yet succeeded, and acts on what it finds —

- an operator's request (``pause`` → stop after the running steps; ``abort``/``rollback`` → cancel
  what runs and restore the live environment);
- a failed step → the failure policy (``restore``: restore now; ``pause``: wait for a retry or a
  rollback); a failed *restore* step → ``failed``, waiting for a retry;
- a step with findings to fix by hand ("NB must be fixed", a failed script) → ``awaiting_fix``;
- a sign-off gate → ``awaiting_approval``; the acceptance hold → ``awaiting_acceptance``;
- an agent operation that waits for a person (the manual installer) → its step and the run
  ``awaiting_operator``, with the wizard's choices on the step, until the operator confirms
  (``POST /upgrades/{id}/steps/{step}/confirm``, forwarded to the agent); then ``running`` again,
  and the step is verified as usual;
- otherwise it runs the wave, one lane per node, lanes side by side.

A step that already succeeded is never run again; a step found ``running`` after a restart is
followed again under its op id (:func:`~controller.agents.follow.carry_out` looks it up on the
agent first), so nothing is ever sent twice; a retried step gets a new attempt number and so a new
op id, and really runs again. Only the lease holder runs executors (:mod:`controller.upgrade.lease`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from config import logs
from config.secrets import SecretBox, redact
from config.vocabulary import NodeState
from controller.agents.client import AgentPool
from controller.agents.follow import Polling, StepFailed, carry_out
from controller.upgrade import acceptance, cancel, local_steps, restore
from controller.upgrade.evidence import (
    backup_evidence,
    baseline_ids,
    baseline_of,
    compare_fingerprints,
    to_fix,
    upgrade_log_findings,
)
from controller.upgrade.model import (
    CHANGING_ACTIONS,
    DRIVEN,
    Local,
    Phase,
    Run,
    RunStatus,
    Step,
    StepStatus,
)
from controller.upgrade.plan import SECRET, PlannedNode, database_server
from controller.upgrade.run_state import WebTransportFor, epoch
from controller.upgrade.store import UpgradeStore, unseal
from node_agent.protocol import (
    Action,
    BackupResult,
    DatabaseRestoreResult,
    FingerprintResult,
    InstallerResult,
    OperationRecord,
    ProgramFilesRestoreResult,
    Result,
    UpgradeLogResult,
    result_for_wire,
)

log = logging.getLogger("crmcluster.upgrade")
#: Phases whose changes do not make a node *touched* (nothing of the install changed yet).
_UNTOUCHING = frozenset({Phase.FREEZE.value, Phase.BACKUP.value, Phase.BASELINE.value, Phase.RESTORE.value})


class NeedsFix(StepFailed):
    """The step found what a person must fix by hand: the step waits as ``awaiting_fix``."""


#: Gate steps: the status the run waits in, the step's message, the run's message.
GATES = {
    Local.SIGNOFF.value: (
        RunStatus.AWAITING_APPROVAL,
        "waiting for the client's sign-off (approve)",
        "waiting for the client's sign-off to move forward with the live upgrade",
    ),
    Local.ACCEPTANCE.value: (
        RunStatus.AWAITING_ACCEPTANCE,
        "waiting for the operator's tests (accept)",
        "upgraded, checked and backed up, users still out: test the live upgrade, then accept "
        "to let users return",
    ),
}
#: After these restore outcomes a run ends as ...
FINAL = {"restored": RunStatus.RESTORED, "aborted": RunStatus.ABORTED}


class RunExecutor:
    def __init__(
        self,
        *,
        run_id: str,
        store: UpgradeStore,
        agents: AgentPool,
        box: SecretBox,
        clock: Callable[[], datetime],
        polling: Polling,
        web_transport_for: WebTransportFor | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        session_wait: float = 1.0,
        shared_state_database: bool = False,
        on_step_finished: Callable[[str, str, float], None] | None = None,
        on_alert: Callable[[str], None] | None = None,
    ) -> None:
        self.run_id = run_id
        #: Called with the alert's kind when a failure pauses a run whose users are back.
        self.on_alert = on_alert
        #: Called with (action, status, seconds) as each step ends (the step duration metric).
        self.on_step_finished = on_step_finished
        self.store = store
        self.agents = agents
        self.box = box
        self.clock = clock
        self.polling = polling
        self.web_transport_for = web_transport_for or (lambda _url: None)
        self.is_leader = is_leader
        self.session_wait = session_wait
        self.shared_state_database = shared_state_database
        self.run: Run
        self.steps: list[Step] = []
        self.nodes: dict[str, PlannedNode] = {}
        self.db: PlannedNode | None = None
        self.secrets: dict[str, str] = {}
        self._ctx_lock = asyncio.Lock()
        self.aborting = asyncio.Event()
        #: step id -> {op id: node}: operations sent for a running step and not yet seen ended.
        self.in_flight: dict[str, dict[str, str]] = {}
        self._stop_new = False
        self.wake = asyncio.Event()

    # Clock -------------------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock()

    def epoch_now(self) -> float:
        return epoch(self.clock())

    # Context (what later steps need), written through under a lock -------------------------------------
    async def update_context(self, **changes: Any) -> None:
        async with self._ctx_lock:
            self.run.context.update(changes)
            await self.store.update_run(self.run_id, context=self.run.context)

    async def mutate_context(self, fn: Callable[[dict[str, Any]], None]) -> None:
        async with self._ctx_lock:
            fn(self.run.context)
            await self.store.update_run(self.run_id, context=self.run.context)

    async def emit(self, kind: str, data: dict[str, Any]) -> None:
        await self.store.event(self.run_id, kind, data)

    # The loop ----------------------------------------------------------------------------------------
    async def load(self) -> bool:
        run = await self.store.get_run(self.run_id)
        if run is None:
            return False
        self.run = run
        self.steps = await self.store.steps(self.run_id)
        self.nodes = {n["name"]: PlannedNode.from_json(n) for n in run.nodes}
        self.db = database_server(self.nodes.values())
        self.secrets = unseal(self.box, run.secrets)
        return True

    async def drive(self) -> None:
        logs.bind(run_id=self.run_id)  # drive() is a task of its own; its steps' tasks copy this
        if not await self.load():
            return
        while self.is_leader():
            fresh = await self.store.status_of(self.run_id)
            if fresh is None:
                return
            self.run.status, self.run.requested = fresh
            if self.run.requested in ("abort", "rollback"):
                await self.begin_restore(
                    reason=f"{self.run.requested} requested by an operator",
                    final="aborted" if self.run.requested == "abort" else "restored",
                )
                continue
            if self.run.status not in DRIVEN:
                return
            if self.run.requested == "pause" and self.run.status == RunStatus.RUNNING:
                await self.store.transition(
                    self.run_id,
                    expect=[RunStatus.RUNNING],
                    status=RunStatus.PAUSED,
                    requested=None,
                    message="paused by an operator",
                )
                return
            restoring = self.run.status == RunStatus.RESTORING
            active = [s for s in self.steps if (s.phase == Phase.RESTORE.value) == restoring]
            pending = [s for s in active if not s.status.done]
            if not pending:
                await self.finish(restoring)
                return
            wave = min(s.wave for s in pending)
            wave_steps = [s for s in active if s.wave == wave and not s.status.done]
            failed = [s for s in wave_steps if s.status in (StepStatus.FAILED, StepStatus.CANCELLED)]
            if failed:
                if not await self.on_failure(failed[0], restoring=restoring):
                    return
                continue
            to_fix = [s for s in wave_steps if s.status == StepStatus.AWAITING_FIX]
            if to_fix:
                await self.await_fix(to_fix)
                return
            gate = next((s for s in wave_steps if s.action in GATES), None)
            if gate is not None:
                await self.hold(gate)
                return
            await self.run_wave(wave_steps)

    async def await_fix(self, steps: list[Step]) -> None:
        """Findings to fix by hand: the run waits (whatever the failure policy) for each step's
        resolution (``resolve``), then ``resume`` reads again; or the operator rolls back."""
        what = "; ".join(f"{s.id} on {s.node}: {s.message}" for s in steps)
        await self.emit(
            "decision",
            {
                "decision": "awaiting_fix",
                "steps": [s.id for s in steps],
                "findings": {s.id: (s.result or {}).get("unresolved") for s in steps},
            },
        )
        await self.store.transition(
            self.run_id,
            expect=[RunStatus.RUNNING],
            status=RunStatus.AWAITING_FIX,
            message=f"{what}; fix by hand, record each resolution (resolve), then resume — or roll back",
        )

    async def hold(self, gate: Step) -> None:
        """Wait for a person: the client's sign-off, or the acceptance of the upgraded cluster."""
        status, waiting, message = GATES[gate.action]
        gate.status = StepStatus.RUNNING
        gate.started_at = gate.started_at or self.now()
        gate.message = waiting
        if gate.action == Local.ACCEPTANCE.value:
            gate.result = {"table": acceptance.testing_table(self.steps)}
            await self.emit(
                "decision",
                {"decision": "awaiting_acceptance", "message": message, "table": gate.result["table"]},
            )
        await self.store.save_step(gate)
        await self.store.transition(self.run_id, expect=[RunStatus.RUNNING], status=status, message=message)

    async def on_failure(self, step: Step, *, restoring: bool) -> bool:
        """Apply the failure policy; True when the loop should go on (restoring)."""
        what = (
            f"step {step.id} ({step.action}{' on ' + step.node if step.node else ''}) failed: {step.message}"
        )
        if restoring:
            await self.emit("decision", {"decision": "restore_stopped", "step": step.id, "message": what})
            await self.store.transition(
                self.run_id,
                expect=[RunStatus.RESTORING],
                status=RunStatus.FAILED,
                message=f"restore stopped: {what}; retry the step or restore by hand",
                finished_at=self.now(),
            )
            return False
        returned_at = self.run.context.get("returned_at")
        if returned_at:
            await self.alert(step, f"{what}; users have been back since {returned_at}")
            return False
        policy = self.run.options.get("failure_policy", "restore")
        if policy == "pause":
            await self.emit(
                "decision", {"decision": "pause", "policy": "pause", "step": step.id, "message": what}
            )
            await self.store.transition(
                self.run_id,
                expect=[RunStatus.RUNNING],
                status=RunStatus.PAUSED,
                message=f"{what}; retry the step, or roll back",
            )
            return False
        await self.begin_restore(reason=what, final="restored")
        return True

    async def alert(self, step: Step, what: str) -> None:
        """A failure once users are back: pause and alert, never restore on its own — restoring the
        pre-upgrade database would lose what users wrote since ``returned_at``."""
        returned_at = self.run.context.get("returned_at")
        alert = {
            "kind": "failure_after_return",
            "step": step.id,
            "message": what,
            "returned_at": returned_at,
            "at": self.now().isoformat() + "Z",
        }
        log.error("upgrade %s: ALERT %s", self.run_id, redact(what))
        await self.update_context(alert=alert)
        await self.emit("alert", alert)
        await self.emit(
            "decision", {"decision": "pause", "policy": "users_back", "step": step.id, "message": what}
        )
        if self.on_alert is not None:
            self.on_alert(str(alert["kind"]))
        await self.store.transition(
            self.run_id,
            expect=[RunStatus.RUNNING],
            status=RunStatus.PAUSED,
            message=(
                f"ALERT: {what}; nothing is restored on its own: fix it and retry the step, or roll "
                f"back accepting the loss of what users wrote since {returned_at}"
            ),
        )

    async def begin_restore(self, *, reason: str, final: str) -> None:
        """Plan (once) and start restoring the live environment."""
        self.aborting.clear()  # the abort stopped the upgrade's steps; the restore's must run
        fresh = await self.store.get_run(self.run_id)
        if fresh is not None and "data_loss_accepted" in fresh.context:  # written by the route
            self.run.context["data_loss_accepted"] = fresh.context["data_loss_accepted"]
        returned_at = self.run.context.get("returned_at")
        accepted = (self.run.context.get("data_loss_accepted") or {}).get("since")
        if returned_at and accepted != returned_at:
            # Only the route may ask this (with the loss accepted); never restore over users' work.
            await self.store.request(self.run_id, None, expect=list(RunStatus))
            self.run.requested = None
            return
        if not any(s.started_at for s in self.steps if s.action != Local.SIGNOFF.value):
            # Nothing was done yet (e.g. aborted while waiting for the sign-off): nothing to restore.
            await self.emit("decision", {"decision": "nothing_to_restore", "reason": reason})
            await self.store.transition(
                self.run_id,
                expect=[
                    RunStatus.RUNNING,
                    RunStatus.PAUSED,
                    RunStatus.AWAITING_APPROVAL,
                    RunStatus.AWAITING_OPERATOR,
                ],
                status=FINAL.get(final, RunStatus.RESTORED),
                requested=None,
                finished_at=self.now(),
                message=f"{reason}; nothing had changed yet",
            )
            self.run.requested = None
            return
        await self.emit("decision", {"decision": "restore", "reason": reason, "final": final})
        await self._give_up_left_running(reason)
        existing = [s for s in self.steps if s.phase == Phase.RESTORE.value]
        if existing:
            for s in existing:  # a restore driven again: its failed steps run again
                if s.status in (StepStatus.FAILED, StepStatus.CANCELLED):
                    s.attempt += 1
                    s.status = StepStatus.PENDING
                    s.message = None
                    await self.store.save_step(s)
        else:
            new = restore.plan_restore(
                run=self.run,
                nodes=list(self.nodes.values()),
                steps=self.steps,
            )
            self.steps.extend(new)
            await self.store.add_steps(
                new,
                event={
                    "decision": "restore_planned",
                    "touched": sorted(self.run.context.get("touched", [])),
                    "steps": len(new),
                },
            )
        await self.update_context(
            restore={"reason": reason, "final": final, "started_at": self.now().isoformat()}
        )
        await self.store.transition(
            self.run_id,
            expect=[
                s for s in RunStatus if s not in (RunStatus.PLANNED, RunStatus.RESTORED, RunStatus.ABORTED)
            ],
            status=RunStatus.RESTORING,
            requested=None,
            message=f"restoring the live environment: {reason}",
        )
        self.run.requested = None

    async def finish(self, restoring: bool) -> None:
        if restoring:
            final = FINAL.get(
                self.run.context.get("restore", {}).get("final", "restored"), RunStatus.RESTORED
            )
            await self.store.transition(
                self.run_id,
                expect=[RunStatus.RESTORING],
                status=final,
                finished_at=self.now(),
                message="the live environment is restored and verified",
            )
        else:
            await self.store.transition(
                self.run_id,
                expect=[RunStatus.RUNNING],
                status=RunStatus.SUCCEEDED,
                finished_at=self.now(),
                message=f"every server runs {self.run.target_version}",
            )

    # Waves and lanes ---------------------------------------------------------------------------------
    async def run_wave(self, wave_steps: list[Step]) -> None:
        phases = sorted({s.phase for s in wave_steps})
        phase = {
            "phase": phases[0] if len(phases) == 1 else phases,
            "wave": wave_steps[0].wave,
            "nodes": sorted({s.node for s in wave_steps if s.node}),
        }
        lanes: dict[str, list[Step]] = {}
        for s in wave_steps:
            lanes.setdefault(s.node or f"~{s.id}", []).append(s)
        self._stop_new = False
        # Queued together, so the group commit writes them in one transaction.
        await asyncio.gather(
            self.emit("phase", phase),
            self.mark_touched([s for s in wave_steps if s.status == StepStatus.PENDING]),
        )
        watcher = asyncio.create_task(self._watch_requests())
        try:
            await asyncio.gather(*(self._lane(steps) for steps in lanes.values()))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch_requests(self) -> None:
        """Notice pause/abort/rollback (from this process or another) while a wave runs."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)
            self.wake.clear()
            fresh = await self.store.status_of(self.run_id)
            if fresh is None or not self.is_leader():
                self._stop_new = True
                return
            status, requested = fresh
            going = status in (RunStatus.RUNNING, RunStatus.AWAITING_OPERATOR)
            if requested == "pause" and going:
                self._stop_new = True
            if requested in ("abort", "rollback") and going:
                self._stop_new = True
                self.aborting.set()
                return

    async def _lane(self, steps: list[Step]) -> None:
        unsaved: list[Step] = []  # a finished step whose record goes out with the next "before"
        try:
            for step in steps:
                if step.status.done:
                    continue
                if self._stop_new and step.status == StepStatus.PENDING:
                    return
                if step.status in (StepStatus.FAILED, StepStatus.CANCELLED):
                    return
                await self.run_step(step, unsaved)
                unsaved = [step]
                if step.status != StepStatus.SUCCEEDED:
                    self._stop_new = True  # Ansible's max_fail_percentage 0: no new step after a failure
                    return
        finally:
            if unsaved:
                await asyncio.shield(self.store.save_steps(unsaved))

    # One step ---------------------------------------------------------------------------------------
    async def run_step(self, step: Step, unsaved: list[Step]) -> None:
        """Run one step. Its "before" record is committed (with ``unsaved``, the lane's previous
        step's "after" record) before anything is sent; its own "after" record is left for the
        caller to write — with the next step's "before", or alone at the end of the lane."""
        fresh = step.status == StepStatus.PENDING  # its op id was never persisted, so never sent
        if fresh:
            step.status = StepStatus.RUNNING
            step.op_id = step.op_id_for(step.attempt)
            step.started_at = self.now()
            step.finished_at = None
            step.message = None
            step.result = None
            await self.before(step)
            await self.store.save_steps([*unsaved, step])
            unsaved.clear()
        elif unsaved:
            await self.store.save_steps(unsaved)
            unsaved.clear()
        deadline = None
        if step.timeout and step.started_at is not None:
            deadline = epoch(step.started_at) + step.timeout
        where = f" on {step.node}" if step.node else ""
        with logs.bound(op_id=step.op_id):  # the work task copies the context as it is created
            log.info("step %s (%s%s, %s) started", step.id, step.action, where, step.phase)
            work = asyncio.create_task(self._perform(step, deadline, fresh=fresh))
        abort = asyncio.create_task(self.aborting.wait())
        try:
            done, _ = await asyncio.wait({work, abort}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            abort.cancel()
            raise  # shutdown or lost lease: the step stays 'running' for the next leader to follow
        abort.cancel()
        if work not in done:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            # Recorded cancelled only once the agent says the work stopped (controller/upgrade/cancel.py).
            await cancel.give_up(self, step, self.in_flight.pop(step.id, {}), why="the run was aborted")
        else:
            try:
                outcome = work.result()
            except StepFailed as exc:
                step.status = StepStatus.AWAITING_FIX if isinstance(exc, NeedsFix) else StepStatus.FAILED
                step.message = exc.message
                if exc.evidence is not None:
                    step.result = exc.evidence
                elif exc.record is not None and exc.record.result:
                    step.result = exc.record.result
            except Exception as exc:  # noqa: BLE001 - a bug or the database fails the step, never the loop
                log.error("upgrade %s step %s: %s", self.run_id, step.id, redact(repr(exc)))
                step.status = StepStatus.FAILED
                step.message = f"controller error: {type(exc).__name__}: {exc}"
            else:
                step.status = StepStatus.SUCCEEDED
                step.result, step.message = outcome
        self.in_flight.pop(step.id, None)
        step.finished_at = self.now() if step.status != StepStatus.RUNNING else None
        if any(s.status == StepStatus.AWAITING_OPERATOR for s in self.steps) or (
            self.run.status == RunStatus.AWAITING_OPERATOR
        ):
            await self._sync_awaiting()
        self._step_ended(step)

    async def _give_up_left_running(self, reason: str) -> None:
        """Upgrade steps still ``running`` that nobody follows any more (a controller stopped
        between the abort and its cancel): cancelled the same way, so the restore waits for them."""
        known = cancel.unfinished(self)
        for s in self.steps:
            left = (
                s.phase != Phase.RESTORE.value
                and s.status in (StepStatus.RUNNING, StepStatus.AWAITING_OPERATOR)
                and not s.is_local
                and s.node is not None
                and s.op_id is not None
                and s.op_id not in known
            )
            if left:
                assert s.node is not None and s.op_id is not None
                await cancel.give_up(self, s, {s.op_id: s.node}, why=f"restoring: {reason}")
                if s.status != StepStatus.RUNNING:
                    s.finished_at = self.now()
                await self.store.save_step(s)

    def _step_ended(self, step: Step) -> None:
        took = (
            (step.finished_at - step.started_at).total_seconds()
            if step.started_at and step.finished_at
            else 0.0
        )
        where = f" on {step.node}" if step.node else ""
        log.log(
            logging.INFO if step.status == StepStatus.SUCCEEDED else logging.WARNING,
            "step %s (%s%s) %s in %.1fs%s",
            step.id,
            step.action,
            where,
            step.status.value,
            took,
            f": {redact(step.message)}" if step.message else "",
            extra={"op_id": step.op_id},
        )
        if self.on_step_finished is not None:
            self.on_step_finished(step.action, step.status.value, took)

    async def before(self, step: Step) -> None:
        """Mark the node *touched* before a change is sent (when the wave did not already)."""
        await self.mark_touched([step])

    async def mark_touched(self, steps: list[Step]) -> None:
        """Persist, in one write, the nodes these steps are about to change (DESIGN.md step 8: a
        node is *touched* once any step after the freeze changed it); installers' nodes go
        ``upgrading`` for the balancer."""
        changing = [s for s in steps if s.phase not in _UNTOUCHING and s.action in CHANGING_ACTIONS]
        names: set[str] = set()
        for s in changing:
            names |= {s.node} if s.node else set(self.nodes)
        touched = set(self.run.context.get("touched", []))
        writes = []
        if not names <= touched:
            writes.append(self.update_context(touched=sorted(touched | names)))
        upgrading = sorted({s.node for s in changing if s.action == "run_installer" and s.node})
        if upgrading:
            writes.append(self.store.set_node_states(upgrading, NodeState.UPGRADING.value))
        await asyncio.gather(*writes)

    async def _perform(
        self, step: Step, deadline: float | None, *, fresh: bool = False
    ) -> tuple[dict[str, Any] | None, str | None]:
        # Nothing runs on a node while an operation given up on there may still run.
        await cancel.wait_for_node(self, step, deadline)
        if step.action == Local.VERIFY_RESTORE.value:
            return await restore.perform_verify(self, step)
        if step.is_local:
            return await local_steps.perform(self, step, deadline)
        assert step.node is not None
        params = self.wire_params(step)
        record = await self.agent_op(
            step, step.node, step.op_id or "", step.action, params, deadline, fresh=fresh
        )
        return await self.after(step, record.parsed_result())  # carry_out has checked it fits

    def wire_params(self, step: Step) -> dict[str, Any]:
        """The step's params as sent: secrets filled in, params that depend on earlier steps computed."""
        params = _fill_secrets(step.params, self.secrets)
        if step.action == "run_installer":
            if "license_key" in params:
                params["license_key"] = self.secrets.get("license_key", "")
            if isinstance(params.get("database"), dict):
                params["database"]["password"] = self.secrets.get("database_password", "")
            if params.get("register") and self.run.context.get("registered"):
                params["register"] = False  # a key registers at most five times: once per upgrade
        if step.action == "fingerprint_records" and step.phase != Phase.BASELINE.value:
            base = baseline_of(self.run.context)
            params = {"ids": baseline_ids(base) if base is not None else []}
        return restore.wire_params(self, step, params)

    async def agent_op(
        self,
        step: Step,
        node: str,
        op_id: str,
        action: str,
        params: dict[str, Any],
        deadline: float | None,
        *,
        fresh: bool = False,
    ) -> OperationRecord:
        client = self.agents.client(self.nodes[node].agent_url)

        async def on_log(lines: list[str]) -> None:
            await self.emit("log", {"step": step.id, "node": node, "action": action, "lines": lines})

        async def on_record(record: OperationRecord) -> None:
            if op_id == step.op_id:
                await self._follow_awaiting(step, record)

        sent = self.in_flight.setdefault(step.id, {})
        sent[op_id] = node
        try:
            record = await carry_out(
                client,
                op_id=op_id,
                action=action,
                params=params,
                deadline=deadline,
                polling=self.polling,
                clock=self.epoch_now,
                on_log=on_log,
                on_record=on_record,
                fresh=fresh,
            )
        except StepFailed as exc:
            sent.pop(op_id, None)
            if exc.given_up:  # timed out, or its agent went silent: it may still run there
                await cancel.remember(self, step, op_id, node, why=exc.message)
            raise
        sent.pop(op_id, None)
        return record

    # A step that waits for a person -----------------------------------------------------------------
    async def _follow_awaiting(self, step: Step, record: OperationRecord) -> None:
        """The agent's operation waits for an operator (``record.awaiting``): the step reads
        ``awaiting_operator`` with what to do; once confirmed it reads ``running`` again."""
        waiting = record.awaiting == "operator" and not record.state.finished
        if waiting == (step.status == StepStatus.AWAITING_OPERATOR):
            return
        if waiting:
            choices = self._wizard_choices(step, list(record.choices))
            step.status = StepStatus.AWAITING_OPERATOR
            step.result = {"awaiting": "operator", "choices": choices, "since": self.now().isoformat() + "Z"}
            step.message = f"waiting for an operator on {step.node}: do what the step lists, then confirm it"
            await self.store.save_step(step)
            await self.emit(
                "awaiting_operator",
                {
                    "step": step.id,
                    "node": step.node,
                    "action": step.action,
                    "choices": choices,
                    "confirm": f"/api/v1/upgrades/{self.run_id}/steps/{step.id}/confirm",
                },
            )
            log.warning("upgrade %s step %s waits for an operator on %s", self.run_id, step.id, step.node)
        else:
            step.status = StepStatus.RUNNING
            step.result = None
            step.message = "confirmed by the operator; verifying"
            await self.store.save_step(step)
        await self._sync_awaiting()

    def _wizard_choices(self, step: Step, choices: list[str]) -> list[str]:
        """The agent's list of the wizard's pages, with the one only the controller knows: the
        triggers (the run may have disabled them itself before the database server's installer)."""
        if step.action != Action.RUN_INSTALLER.value or step.phase != Phase.DATABASE_SERVER.value:
            return choices
        if self.run.options.get("disable_triggers"):
            triggers = (
                "leave 'Disable triggers' unticked: crmcluster disabled the triggers before this step "
                "and enables them again after the other servers"
            )
        else:
            triggers = "leave 'Disable triggers' unticked (the run was not asked to disable triggers)"
        at = next((i for i, c in enumerate(choices) if "stop IIS" in c), max(0, len(choices) - 1))
        return [*choices[:at], triggers, *choices[at:]]

    async def _sync_awaiting(self) -> None:
        """The run reads ``awaiting_operator`` while any of its steps does, ``running`` otherwise."""
        waiting = [s for s in self.steps if s.status == StepStatus.AWAITING_OPERATOR]
        if waiting:
            where = ", ".join(f"{s.id} on {s.node}" for s in waiting)
            if await self.store.transition(
                self.run_id,
                expect=[RunStatus.RUNNING],
                status=RunStatus.AWAITING_OPERATOR,
                message=f"waiting for an operator: {where}",
            ):
                self.run.status = RunStatus.AWAITING_OPERATOR
        elif await self.store.transition(
            self.run_id,
            expect=[RunStatus.AWAITING_OPERATOR],
            status=RunStatus.RUNNING,
            message="the operator confirmed; going on",
        ):
            self.run.status = RunStatus.RUNNING

    async def after(self, step: Step, result: Result) -> tuple[dict[str, Any] | None, str | None]:
        """Judge an agent step's result; raise StepFailed when the guide says it is not good enough."""
        node = step.node or ""
        raw = result_for_wire(result)
        if isinstance(result, BackupResult):
            ev, problem = backup_evidence(result)
            if problem:
                raise StepFailed(f"{step.action} on {node} not verified: {problem}")
            checksum = f"sha256 {result.sha256[:12]}…" if result.sha256 else "checksums verified"
            return ev, f"{result.size} bytes, {checksum}"  # the step keeps it
        if isinstance(result, UpgradeLogResult):
            ev, problems = upgrade_log_findings(result)
            fixable = to_fix(result)
            fatal = [p for p in problems if p not in fixable]
            if fatal:
                raise StepFailed(f"upgrade log of {node}: " + "; ".join(problems[:10]), evidence=ev)
            # "Manually correct any problems with a NB must be fixed message": a person fixes them
            # and records how (resolve); the re-read on resume honours what was resolved.
            resolution = (self.run.context.get("resolutions") or {}).get(step.id) or {}
            resolved = set(resolution.get("findings") or [])
            left = [p for p in fixable if p not in resolved]
            ev["to_fix"] = fixable
            if resolution:
                ev["resolution"] = resolution
            if left:
                ev["unresolved"] = left
                raise NeedsFix(f"upgrade log of {node}: fix by hand: " + "; ".join(left[:10]), evidence=ev)
            if fixable:
                return ev, (
                    f"{ev['scripts']} scripts; {len(fixable)} finding(s) resolved by hand "
                    f"({resolution.get('by')}): {resolution.get('note')}"
                )
            return ev, f"{ev['scripts']} scripts succeeded, nothing must be fixed"
        if isinstance(result, DatabaseRestoreResult) and self.shared_state_database:
            # The embedded default keeps crmcluster's tables in the CRM database: the restore has
            # just rolled them back to the backup's moment. This executor holds the truth.
            self.run.status = RunStatus.RESTORING
            step.status, step.result = StepStatus.SUCCEEDED, raw
            step.finished_at = self.now()
            await self.store.rewrite(self.run, self.steps)
            return raw, "database restored (crmcluster's own records written again)"
        if isinstance(result, ProgramFilesRestoreResult):
            await restore.remember_restore(self, step, result)
            return raw, f"program files of {node} put back"
        if isinstance(result, InstallerResult):
            if step.params.get("register") and not self.run.context.get("registered"):
                await self.update_context(registered=True)
            return raw, f"{node} upgraded to {self.run.target_version}"
        if isinstance(result, FingerprintResult):
            if step.phase == Phase.BASELINE.value:
                await self.update_context(baseline=raw)
                return raw, f"{len(result.records)} company records fingerprinted"
            base = baseline_of(self.run.context) or FingerprintResult(records={})
            diffs = compare_fingerprints(base, result, schema=False)
            if result.schema_version not in (None, self.run.target_version):
                diffs.append(
                    f"the database schema is at {result.schema_version}, not {self.run.target_version}"
                )
            await self.update_context(records_compared={"differences": diffs, "count": len(result.records)})
            if diffs:
                raise StepFailed("records differ after the upgrade: " + "; ".join(diffs[:10]))
            return raw, f"{len(result.records)} records equal to the baseline"
        return raw or None, None


def _fill_secrets(value: Any, secrets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        if set(value) == {SECRET}:
            return secrets.get(str(value[SECRET]), "")
        return {k: _fill_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_secrets(v, secrets) for v in value]
    return value
