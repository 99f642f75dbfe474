"""The upgrade orchestrator: the operator's commands, and the leader's reconcile loop that drives runs.

Commands (from the routes) only *record intent* — a status compare-and-set or a ``requested`` flag —
and wake the loop; the loop, on the lease holder only, compares every run's persisted state with
what it should be doing and starts an executor (:class:`~controller.upgrade.executor.RunExecutor`)
for each run that needs driving. Killing the controller at any moment loses nothing: the next leader
reads the same rows and carries on (steps ``running`` are followed again by their op ids).

    orchestrator = Orchestrator(store=..., agents=..., box=..., settings=...)
    ctx.tasks.start("upgrade-orchestrator", orchestrator.run_forever, restart=True)
    run = await orchestrator.plan(UpgradeRequest(...), actor="admin")
    await orchestrator.start(run.id)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from config.api_errors import Conflict, InvalidInput, NotFound, Unavailable
from config.secrets import SecretBox, redact
from config.settings import ControllerSettings
from config.state_schema import utcnow
from controller.agents.client import AgentPool, AgentRejected, AgentUnreachable
from controller.agents.follow import Polling
from controller.upgrade import acceptance
from controller.upgrade.estimate import estimate_downtime, measured_downtime
from controller.upgrade.executor import RunExecutor
from controller.upgrade.lease import LeaderLease
from controller.upgrade.model import (
    ACTIVE,
    DRIVEN,
    AcceptRequest,
    Local,
    Phase,
    Run,
    RunStatus,
    Step,
    StepStatus,
    UpgradeRequest,
)
from controller.upgrade.plan import plan_upgrade
from controller.upgrade.preflight import FINDINGS, run_preflight
from controller.upgrade.run_state import WebTransportFor
from controller.upgrade.store import UpgradeStore, seal

log = logging.getLogger("crmcluster.upgrade")
#: Statuses from which an operator's abort/rollback makes the loop restore.
RESTORABLE = frozenset(
    {
        RunStatus.RUNNING,
        RunStatus.PAUSED,
        RunStatus.AWAITING_APPROVAL,
        RunStatus.AWAITING_FIX,
        RunStatus.AWAITING_ACCEPTANCE,
        RunStatus.AWAITING_OPERATOR,
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
    }
)
#: Statuses from which an abort is taken (a run that ended is rolled back instead).
ABORTABLE = frozenset(
    {
        RunStatus.RUNNING,
        RunStatus.PAUSED,
        RunStatus.AWAITING_APPROVAL,
        RunStatus.AWAITING_FIX,
        RunStatus.AWAITING_ACCEPTANCE,
        RunStatus.AWAITING_OPERATOR,
    }
)
#: Statuses of a run whose steps go on (a step waiting for an operator does not stop the others).
GOING = (RunStatus.RUNNING, RunStatus.AWAITING_OPERATOR)


class Orchestrator:
    def __init__(
        self,
        *,
        store: UpgradeStore,
        agents: AgentPool,
        box: SecretBox,
        settings: ControllerSettings,
        lease: LeaderLease,
        clock: Callable[[], datetime] = utcnow,
        polling: Polling | None = None,
        web_transport_for: WebTransportFor | None = None,
        interval: float = 1.0,
        session_wait: float = 1.0,
        on_step_finished: Callable[[str, str, float], None] | None = None,
        on_alert: Callable[[str], None] | None = None,
    ) -> None:
        self.on_step_finished = on_step_finished
        self.on_alert = on_alert
        self.store = store
        self.agents = agents
        self.box = box
        self.settings = settings
        self.lease = lease
        self.clock = clock
        # One per orchestrator: its estimates of how long each action takes are this cluster's.
        self.polling = polling or Polling()
        self.web_transport_for = web_transport_for
        self.interval = min(interval, max(0.05, lease.ttl / 3))
        self.session_wait = session_wait
        self.executors: dict[str, tuple[RunExecutor, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()

    # The loop ----------------------------------------------------------------------------------------
    def wake(self, run_id: str | None = None) -> None:
        self._wake.set()
        if run_id and run_id in self.executors:
            self.executors[run_id][0].wake.set()

    @property
    def leader(self) -> bool:
        return self.lease.held

    async def run_forever(self) -> None:
        try:
            while True:
                await self.reconcile()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
                self._wake.clear()
        finally:
            await self.stop_executors()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.lease.release())
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.aclose())

    async def reconcile(self) -> None:
        """One pass: hold the lease, then make sure every run that needs driving has an executor."""
        for run_id, (_, task) in list(self.executors.items()):
            if task.done():
                del self.executors[run_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("upgrade %s: executor stopped: %s", run_id, redact(repr(task.exception())))
        try:
            leader = await self.lease.acquire()
        except Exception as exc:  # noqa: BLE001 - the reconcile loop outlives any one pass
            log.warning("leader lease not renewed: %s", redact(repr(exc)))
            leader = self.lease.held
        if not leader:
            await self.stop_executors()
            return
        try:
            runs = await self.store.list_runs(statuses=DRIVEN | RESTORABLE, limit=50)
        except Exception as exc:  # noqa: BLE001 - the reconcile loop outlives any one pass
            log.warning("cannot read upgrade runs: %s", redact(repr(exc)))
            return
        for run in runs:
            wanted = run.status in DRIVEN or (
                run.requested in ("abort", "rollback") and run.status in RESTORABLE
            )
            if wanted and run.id not in self.executors:
                ex = RunExecutor(
                    run_id=run.id,
                    store=self.store,
                    agents=self.agents,
                    box=self.box,
                    clock=self.clock,
                    polling=self.polling,
                    web_transport_for=self.web_transport_for,
                    is_leader=lambda: self.lease.held,
                    session_wait=self.session_wait,
                    shared_state_database=self.settings.crm_url == self.settings.state_url,
                    on_step_finished=self.on_step_finished,
                    on_alert=self.on_alert,
                )
                task = asyncio.create_task(ex.drive(), name=f"upgrade-{run.id}")
                task.add_done_callback(lambda _t: self._wake.set())
                self.executors[run.id] = (ex, task)

    async def stop_executors(self) -> None:
        items = list(self.executors.values())
        self.executors.clear()
        for _, task in items:
            task.cancel()
        for _, task in items:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # Commands ----------------------------------------------------------------------------------------
    async def get(self, run_id: str) -> Run:
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"no upgrade run {run_id!r}")
        return run

    async def plan(self, request: UpgradeRequest, *, actor: str) -> Run:
        """Plan and preflight (changes nothing). Unknown override names are refused."""
        unknown = [o for o in request.overrides if o not in FINDINGS]
        if unknown:
            raise InvalidInput(
                f"overrides: unknown finding {unknown[0]!r}", details={"known": list(FINDINGS)}
            )
        run_id = "up-" + uuid.uuid4().hex[:10]
        result = await run_preflight(
            run_id=run_id,
            request=request,
            node_rows=await self.store.node_rows(),
            agents=self.agents,
            settings=self.settings,
            polling=self.polling,
        )
        options = request.options()
        default_timeout = float(self.settings.step_timeout)
        steps = plan_upgrade(
            run_id=run_id,
            nodes=result.nodes,
            target=request.target_version,
            options=options,
            default_timeout=default_timeout,
        )
        secrets = {"license_key": request.license_key.get_secret_value()}
        if request.database is not None:
            secrets["database_password"] = request.database.password.get_secret_value()
        run = Run(
            id=run_id,
            status=RunStatus.PLANNED,
            target_version=request.target_version,
            from_version=result.from_version,
            options=options,
            preflight=result.findings,
            nodes=[n.as_json() for n in result.nodes],
            context={
                "install_name": self.settings.install_name,
                "default_timeout": default_timeout,
                "estimate": estimate_downtime(steps, history=await self._history()),
            },
            secrets=seal(self.box, secrets),
            created_by=actor,
        )
        await self.store.create_run(run, steps)
        await self.store.event(run_id, "preflight", {"findings": result.findings, "blocking": run.blocking})
        return await self.get(run_id)

    async def _history(self) -> list[tuple[str, list[Step]]]:
        """Earlier runs' steps (the newest few that ended), for the downtime estimate."""
        ended = [RunStatus.SUCCEEDED, RunStatus.RESTORED, RunStatus.FAILED, RunStatus.ABORTED]
        return [
            (r.id, await self.store.steps(r.id)) for r in await self.store.list_runs(statuses=ended, limit=5)
        ]

    async def start(self, run_id: str) -> Run:
        run = await self.get(run_id)
        if run.status != RunStatus.PLANNED:
            raise Conflict(f"run {run_id} is {run.status.value}; only a planned run starts")
        if run.blocking:
            raise Conflict(
                "the preflight failed: "
                + ", ".join(run.blocking)
                + " (name them in overrides to accept them)",
                details={"blocking": run.blocking},
                code="preflight_failed",
            )
        if not await self.store.steps(run_id):
            raise Conflict("the run has no plan (no single database server)")
        others = [r for r in await self.store.list_runs(statuses=ACTIVE) if r.id != run_id]
        if others:
            raise Conflict(f"upgrade {others[0].id} is {others[0].status.value}; one upgrade at a time")
        if not await self.store.transition(
            run_id,
            expect=[RunStatus.PLANNED],
            status=RunStatus.RUNNING,
            started_at=self.clock(),
            message="started",
        ):
            raise Conflict(f"run {run_id} changed meanwhile")
        self.wake(run_id)
        return await self.get(run_id)

    async def pause(self, run_id: str) -> Run:
        run = await self.get(run_id)
        if run.status not in GOING:
            raise Conflict(f"run {run_id} is {run.status.value}; only a running run pauses")
        await self.store.request(run_id, "pause", expect=GOING)
        await self.store.event(
            run_id, "decision", {"decision": "pause_requested", "message": "pausing after the running steps"}
        )
        self.wake(run_id)
        return await self.get(run_id)

    async def resolve(self, run_id: str, step_id: str, *, note: str, actor: str) -> Run:
        """Record how a person fixed a step's findings ("NB must be fixed", a failed script)."""
        run = await self.get(run_id)
        step = next((s for s in await self.store.steps(run_id) if s.id == step_id), None)
        if step is None:
            raise NotFound(f"run {run_id} has no step {step_id!r}")
        if run.status != RunStatus.AWAITING_FIX or step.status != StepStatus.AWAITING_FIX:
            raise Conflict(
                f"step {step_id} is {step.status.value} (the run is {run.status.value}); only a step "
                "awaiting a fix is resolved"
            )
        findings = list((step.result or {}).get("to_fix") or [])
        resolution = {
            "findings": findings,
            "note": note,
            "by": actor,
            "at": self.clock().isoformat() + "Z",
            "attempt": step.attempt,
        }
        context = {**run.context}
        context["resolutions"] = {**(context.get("resolutions") or {}), step_id: resolution}
        await self.store.update_run(run_id, context=context)
        await self.store.event(run_id, "decision", {"decision": "resolved", "step": step_id, **resolution})
        return await self.get(run_id)

    async def resume(self, run_id: str) -> Run:
        run = await self.get(run_id)
        if run.status == RunStatus.AWAITING_FIX:
            return await self._resume_after_fix(run)
        if run.status in GOING and run.requested == "pause":
            await self.store.request(run_id, None, expect=GOING)
            return await self.get(run_id)
        if run.status != RunStatus.PAUSED:
            raise Conflict(f"run {run_id} is {run.status.value}; only a paused run resumes")
        failed = [
            s for s in await self.store.steps(run_id) if s.status in (StepStatus.FAILED, StepStatus.CANCELLED)
        ]
        if failed:
            raise Conflict(
                f"step {failed[0].id} failed; retry it or roll back",
                details={"failed_steps": [s.id for s in failed]},
            )
        await self.store.transition(
            run_id, expect=[RunStatus.PAUSED], status=RunStatus.RUNNING, requested=None, message="resumed"
        )
        self.wake(run_id)
        return await self.get(run_id)

    async def _resume_after_fix(self, run: Run) -> Run:
        waiting = [s for s in await self.store.steps(run.id) if s.status == StepStatus.AWAITING_FIX]
        resolutions = run.context.get("resolutions") or {}
        unresolved = [s.id for s in waiting if s.id not in resolutions]
        if unresolved:
            raise Conflict(
                f"step {unresolved[0]} awaits a fix: record its resolution first "
                f"(POST /upgrades/{run.id}/steps/{unresolved[0]}/resolve), or roll back",
                details={"unresolved_steps": unresolved},
            )
        for step in waiting:  # read again: the re-read honours the recorded resolutions
            step.attempt += 1
            step.status = StepStatus.PENDING
            step.message = (
                f"resolved by {resolutions[step.id].get('by')}; reading again (attempt {step.attempt})"
            )
            step.finished_at = None
            await self.store.save_step(step)
        await self.store.transition(
            run.id, expect=[RunStatus.AWAITING_FIX], status=RunStatus.RUNNING, message="resumed after the fix"
        )
        self.wake(run.id)
        return await self.get(run.id)

    async def approve(self, run_id: str, *, actor: str) -> Run:
        run = await self.get(run_id)
        if run.status != RunStatus.AWAITING_APPROVAL:
            raise Conflict(f"run {run_id} is {run.status.value}; nothing awaits approval")
        for step in await self.store.steps(run_id):
            if step.action == Local.SIGNOFF.value and not step.status.done:
                step.status = StepStatus.SUCCEEDED
                step.finished_at = self.clock()
                step.started_at = step.started_at or step.finished_at
                step.message = f"client sign-off recorded by {actor}"
                step.result = {"approved_by": actor, "approved_at": step.finished_at.isoformat() + "Z"}
                await self.store.save_step(step)
        await self.store.transition(
            run_id,
            expect=[RunStatus.AWAITING_APPROVAL],
            status=RunStatus.RUNNING,
            message=f"approved by {actor}",
        )
        self.wake(run_id)
        return await self.get(run_id)

    async def accept(self, run_id: str, body: AcceptRequest, *, actor: str) -> Run:
        """The operator's acceptance of the live upgrade: the ticked rows and a note; users return."""
        run = await self.get(run_id)
        if run.status != RunStatus.AWAITING_ACCEPTANCE:
            raise Conflict(f"run {run_id} is {run.status.value}; nothing awaits acceptance")
        gate = acceptance.gate_of(await self.store.steps(run_id))
        if gate is None or gate.status.done:
            raise Conflict(f"run {run_id} has no acceptance hold waiting")
        now = self.clock()
        at = now.isoformat() + "Z"
        table = acceptance.accept_table(
            list((gate.result or {}).get("table") or []), ticked=body.ticked(), actor=actor, at=at
        )
        gate.status = StepStatus.SUCCEEDED
        gate.finished_at = now
        gate.started_at = gate.started_at or now
        ticked = [r["id"] for r in table if r.get("ticked_by")]
        gate.message = f"accepted by {actor}: {len(ticked)} row(s) ticked; {body.note}"
        gate.result = {"table": table, "accepted_by": actor, "accepted_at": at, "note": body.note}
        await self.store.save_step(gate)
        await self.store.event(
            run_id, "decision", {"decision": "accepted", "by": actor, "ticked": ticked, "note": body.note}
        )
        await self.store.transition(
            run_id,
            expect=[RunStatus.AWAITING_ACCEPTANCE],
            status=RunStatus.RUNNING,
            message=f"accepted by {actor}; users return",
        )
        self.wake(run_id)
        return await self.get(run_id)

    async def abort(
        self, run_id: str, *, accept_data_loss_since: str | None = None, actor: str | None = None
    ) -> Run:
        run = await self.get(run_id)
        if run.status == RunStatus.PLANNED:
            await self.store.transition(
                run_id,
                expect=[RunStatus.PLANNED],
                status=RunStatus.ABORTED,
                finished_at=self.clock(),
                message="aborted before it started; nothing changed",
            )
            return await self.get(run_id)
        if run.status not in ABORTABLE:
            raise Conflict(f"run {run_id} is {run.status.value}; it cannot be aborted")
        await self._request_restore(run, "abort", accept_data_loss_since=accept_data_loss_since, actor=actor)
        return await self.get(run_id)

    async def rollback(
        self, run_id: str, *, accept_data_loss_since: str | None = None, actor: str | None = None
    ) -> Run:
        run = await self.get(run_id)
        if run.status not in RESTORABLE:
            raise Conflict(f"run {run_id} is {run.status.value}; there is nothing to roll back")
        await self._request_restore(
            run, "rollback", accept_data_loss_since=accept_data_loss_since, actor=actor
        )
        return await self.get(run_id)

    async def _request_restore(
        self, run: Run, what: str, *, accept_data_loss_since: str | None, actor: str | None
    ) -> None:
        returned_at = run.context.get("returned_at")
        if not returned_at and run.status == RunStatus.SUCCEEDED:
            # A run that ended before returned_at was recorded: its users came back at the lock-out's end.
            returned_at = run.context.get("lockout_ended_at")
        if returned_at:
            # Users were back: restoring the pre-upgrade database loses what they wrote since.
            if accept_data_loss_since != returned_at:
                until = self.clock().isoformat() + "Z"
                raise Conflict(
                    f"users have been back on {run.target_version} since {returned_at}: restoring the "
                    f"pre-upgrade database loses everything they wrote from {returned_at} to now; to "
                    f'accept that, send {{"accept_data_loss_since": "{returned_at}"}}',
                    details={"returned_at": returned_at, "window": {"since": returned_at, "until": until}},
                    code="data_loss",
                )
            accepted = {"by": actor, "since": returned_at, "at": self.clock().isoformat() + "Z", "what": what}
            await self.store.update_run(run.id, context={**run.context, "data_loss_accepted": accepted})
            await self.store.event(run.id, "decision", {"decision": "data_loss_accepted", **accepted})
        if not await self.store.request(run.id, what, expect=RESTORABLE):
            raise Conflict(f"run {run.id} changed meanwhile; look again")
        await self.store.event(run.id, "decision", {"decision": f"{what}_requested"})
        self.wake(run.id)

    async def confirm(self, run_id: str, step_id: str, *, note: str, actor: str) -> Run:
        """A person did by hand what a step waits for (the manual installer: the wizard run with
        the choices the step lists): forwarded to the step's agent, which then verifies the work
        as usual. The note, with who gave it, is kept in the agent's record (the step's result,
        the checklist) and in the run's events; the route records it in the audit trail."""
        run = await self.get(run_id)
        step = next((s for s in await self.store.steps(run_id) if s.id == step_id), None)
        if step is None:
            raise NotFound(f"run {run_id} has no step {step_id!r}")
        if step.status != StepStatus.AWAITING_OPERATOR or step.node is None or step.op_id is None:
            raise Conflict(
                f"step {step_id} is {step.status.value}; only a step awaiting an operator is confirmed",
                code="not_awaiting",
            )
        node = next((n for n in run.nodes if n["name"] == step.node), None)
        if node is None:
            raise Conflict(f"step {step_id}'s server {step.node} is not in the run")
        said = f"{note.strip() or 'done as listed'} (confirmed by {actor})"
        client = self.agents.client(node["agent_url"])
        try:
            await client.confirm(step.op_id, said)
        except AgentRejected as exc:
            if exc.status in (404, 409):
                raise Conflict(
                    f"the agent of {step.node} says operation {step.op_id} waits for nobody ({exc})",
                    code="not_awaiting",
                ) from exc
            raise
        except AgentUnreachable as exc:
            raise Unavailable(f"the agent of {step.node} did not answer; confirm again: {exc}") from exc
        await self.store.event(
            run_id,
            "operator_confirmed",
            {"step": step_id, "node": step.node, "action": step.action, "by": actor, "note": said},
        )
        self.wake(run_id)
        return await self.get(run_id)

    async def retry(self, run_id: str, step_id: str) -> Run:
        run = await self.get(run_id)
        steps = await self.store.steps(run_id)
        step = next((s for s in steps if s.id == step_id), None)
        if step is None:
            raise NotFound(f"run {run_id} has no step {step_id!r}")
        if step.status not in (StepStatus.FAILED, StepStatus.CANCELLED):
            raise Conflict(f"step {step_id} is {step.status.value}; only a failed step is retried")
        restoring = step.phase == Phase.RESTORE.value
        expect = RunStatus.FAILED if restoring else RunStatus.PAUSED
        if run.status != expect:
            raise Conflict(
                f"run {run_id} is {run.status.value}; "
                f"a failed step is retried while the run is {expect.value}"
            )
        step.attempt += 1
        step.status = StepStatus.PENDING
        step.message = f"retry requested (attempt {step.attempt})"
        step.finished_at = None
        await self.store.save_step(step)
        await self.store.transition(
            run_id,
            expect=[expect],
            status=RunStatus.RESTORING if restoring else RunStatus.RUNNING,
            requested=None,
            finished_at=None,
            message=f"retrying {step_id}",
        )
        self.wake(run_id)
        return await self.get(run_id)

    async def view(self, run_id: str) -> dict[str, Any]:
        run = await self.get(run_id)
        steps = await self.store.steps(run_id)
        body = run_view(run, [s.public() for s in steps])
        body["downtime"] = {
            "estimate": run.context.get("estimate"),
            "measured": measured_downtime(run.context, steps),
        }
        return body


def run_view(run: Run, plan: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The run as the API answers it (DESIGN.md: id, status, preflight findings, the ordered plan)."""
    from controller.upgrade.model import iso

    ctx = run.context
    body: dict[str, Any] = {
        "id": run.id,
        "status": run.status.value,
        "target_version": run.target_version,
        "from_version": run.from_version,
        "requested": run.requested,
        "message": run.message,
        "options": run.options,
        "preflight": run.preflight,
        "blocking": run.blocking,
        "created_by": run.created_by,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "touched": ctx.get("touched", []),
        "lockout": {"started_at": ctx.get("lockout_started_at"), "ended_at": ctx.get("lockout_ended_at")},
        #: When users returned to the upgraded cluster: from then on nothing is restored on its own.
        "returned_at": ctx.get("returned_at"),
        "alert": ctx.get("alert"),
        "data_loss_accepted": ctx.get("data_loss_accepted"),
    }
    if plan is not None:
        body["plan"] = plan
        gate = next((s for s in plan if s["action"] == Local.ACCEPTANCE.value), None)
        body["acceptance"] = (
            {"status": gate["status"], **(gate.get("result") or {})} if gate is not None else None
        )
        # Steps that wait for a person, with what to do and where to confirm it.
        body["awaiting_operator"] = [
            {
                "step": s["id"],
                "node": s["node"],
                "action": s["action"],
                "choices": (s.get("result") or {}).get("choices", []),
                "since": (s.get("result") or {}).get("since"),
                "confirm": f"/api/v1/upgrades/{run.id}/steps/{s['id']}/confirm",
            }
            for s in plan
            if s["status"] == StepStatus.AWAITING_OPERATOR.value
        ]
    return body
