"""Restore a live environment: the guide's chapter "Restoring a Live Environment", cluster-wide.

"If a live upgrade fails, ... return the customer site to the pre-upgrade live environment." A node
is *touched* once any step after the freeze changed it (the installer ran, triggers were disabled,
a Replication Engine removed). The restore, in waves:

1. every server locked out again (``maintenance``) — a rollback after success needs it;
2. every touched server stopped (IIS, Tomcat, CRM services): the database needs exclusive access;
3. the database restored **once**, on the database server, from the verified pre-upgrade backup
   (the guide's "Restoring the database backup") — when the database server was touched;
4. on each touched server: program files put back (the guide's ``<install>_backup`` folder, or on
   Windows by renaming), Tomcat's web apps and the shared ``Services`` folder with them (the
   guide's website redirect alone leaves Tomcat and the CRM services on the new version), the
   website redirected ("Redirecting the website"), the registry restored ("Restoring the registry
   backup") and eware.dll re-registered ("Reregistering the installation");
5. IIS, Tomcat and the CRM services started on every server ("Stopping and restarting IIS"), and a
   warm-up logon on each;
6. verified: every server on the old version — eware.dll (the agent's reported version), the web
   apps Tomcat serves (as the agent reads its folder and as Tomcat answers on ``/sdata/``) and each
   CRM service's program —, the old schema, the 20 records equal to the baseline, logons served — a
   verification that fails says exactly what differs;
7. the balancer back in service.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from controller.agents.client import AgentError
from controller.agents.follow import StepFailed
from controller.upgrade.evidence import baseline_ids, baseline_of, compare_fingerprints
from controller.upgrade.local_steps import logons_served, sdata_answer, version_differences
from controller.upgrade.model import Local, Phase, Run, Step
from controller.upgrade.plan import PlannedNode, StepBuilder, database_server, start_actions, stop_actions
from controller.upgrade.run_state import RunState, sub_op
from node_agent.protocol import Action, FingerprintResult, ProgramFilesRestoreResult, result_for_wire

#: restore action -> the backup action whose verified result (a pre-upgrade backup step's) it puts back.
SOURCES = {
    Action.RESTORE_DATABASE.value: Action.BACKUP_DATABASE.value,
    Action.RESTORE_PROGRAM_FILES.value: Action.BACKUP_PROGRAM_FILES.value,
    Action.RESTORE_REGISTRY.value: Action.BACKUP_REGISTRY.value,
}


def backup_of(steps: list[Step], node: str, backup_action: str) -> dict[str, Any] | None:
    """The evidence of the verified pre-upgrade backup of ``node`` made by ``backup_action``."""
    for s in steps:
        if s.phase == Phase.BACKUP.value and s.node == node and s.action == backup_action and s.status.done:
            return s.result
    return None


def plan_restore(*, run: Run, nodes: list[PlannedNode], steps: list[Step]) -> list[Step]:
    """The restore steps for what the run touched so far, numbered after ``steps``."""
    b = StepBuilder(
        run_id=run.id,
        seq=max((s.seq for s in steps), default=0),
        wave=max((s.wave for s in steps), default=-1) + 1,
        timeouts=dict(run.options.get("step_timeouts") or {}),
        default_timeout=float(run.options.get("step_timeout") or run.context.get("default_timeout") or 900.0),
    )
    touched = set(run.context.get("touched", []))
    db = database_server(nodes)
    ordered = ([db] if db else []) + [n for n in nodes if db is None or n.name != db.name]
    touched_nodes = [n for n in ordered if n.name in touched]

    b.add(Phase.RESTORE, None, Local.LOCK_OUT.value)
    b.next_wave()
    for n in touched_nodes:
        b.lane(Phase.RESTORE, n.name, stop_actions(n, web=True))
    b.next_wave()
    if db is not None and db.name in touched:
        b.add(Phase.RESTORE, db.name, Action.RESTORE_DATABASE.value, {})
        b.next_wave()
    for n in touched_nodes:
        b.lane(
            Phase.RESTORE,
            n.name,
            [
                (Action.RESTORE_PROGRAM_FILES.value, {}),
                (Action.REDIRECT_WEBSITE.value, {}),
                (Action.RESTORE_REGISTRY.value, {}),
                (Action.REGISTER_DLL.value, {}),
            ],
        )
    b.next_wave()
    for n in ordered:
        b.lane(Phase.RESTORE, n.name, [*start_actions(n), (Action.WARMUP_LOGON.value, None)])
    b.next_wave()
    b.add(Phase.RESTORE, None, Local.VERIFY_RESTORE.value, {"version": run.from_version})
    b.next_wave()
    b.add(Phase.RESTORE, None, Local.RETURN_TO_SERVICE.value)
    return b.steps


def wire_params(ex: RunState, step: Step, params: dict[str, Any]) -> dict[str, Any]:
    """Fill a restore step's ``source``/``path`` from the backups and restores made earlier."""
    if step.phase != Phase.RESTORE.value or not step.node:
        return params
    kind = SOURCES.get(step.action)
    if kind is not None:
        path = (backup_of(ex.steps, step.node, kind) or {}).get("path")
        if not path:
            raise StepFailed(f"no verified {kind} backup of {step.node} to restore from")
        return {**params, "source": path}
    if step.action in (Action.REDIRECT_WEBSITE.value, Action.REGISTER_DLL.value):
        raw = ex.run.context.get("restored", {}).get(step.node)
        if not raw:
            return params
        restored = ProgramFilesRestoreResult.model_validate(raw)
        # The website points at the backup's WWWRoot; regsvr32 is given the backup folder (the
        # agent finds WWWRoot\eware.dll under it).
        path = restored.website_path if step.action == Action.REDIRECT_WEBSITE.value else restored.path
        return {**params, "path": path}
    return params


async def remember_restore(ex: RunState, step: Step, result: ProgramFilesRestoreResult) -> None:
    """Keep where program files were put back (the website redirect and regsvr32 point there)."""
    if step.node:
        node = step.node
        kept = result_for_wire(result)
        await ex.mutate_context(lambda c: c.setdefault("restored", {}).update({node: kept}))


async def verify(ex: RunState, step: Step) -> tuple[dict[str, Any], list[str]]:
    """``(evidence, differences)`` of the live environment against the one before the upgrade."""
    old = step.params.get("version") or ex.run.from_version
    diffs: list[str] = []
    ev: dict[str, Any] = {"expected_version": old, "nodes": {}}
    for name, node in ex.nodes.items():
        try:
            st = await ex.agents.client(node.agent_url).status()
        except (AgentError, ValidationError) as exc:
            diffs.append(f"{name}: agent did not answer ({type(exc).__name__})")
            continue
        sdata = await sdata_answer(ex, st.web_url) if st.web_url else None
        ev["nodes"][name] = {
            "version": st.version,
            "web": st.web.value,
            "tomcat": st.tomcat.value,
            "tomcat_version": st.tomcat_version,
            "sdata": sdata,
            "service_versions": dict(st.service_versions),
        }
        if st.version != old:
            diffs.append(f"{name} runs {st.version}, not {old}")
        if st.web.value != "running":
            diffs.append(f"{name}: IIS is {st.web.value}")
        diffs += version_differences(
            name, old, tomcat=st.tomcat_version, sdata=sdata, services=dict(st.service_versions)
        )
    baseline = baseline_of(ex.run.context)
    if ex.db is not None and baseline is not None:
        rec = await sub_op(
            ex,
            step,
            ex.db.name,
            "fingerprint",
            Action.FINGERPRINT_RECORDS.value,
            {"ids": baseline_ids(baseline)},
        )
        now = rec.result_as(FingerprintResult)
        record_diffs = compare_fingerprints(baseline, now, schema=True)
        ev["records"] = {"compared": len(baseline.records), "differences": record_diffs}
        ev["schema_version"] = now.schema_version
        diffs += record_diffs
    else:
        ev["records"] = "not applicable: no baseline was taken before the failure"
    served = await logons_served(ex, step)
    ev["logons"] = served
    diffs += [f"{n}: logon not served ({why})" for n, why in served.items() if why != "ok"]
    return ev, diffs


async def perform_verify(ex: RunState, step: Step) -> tuple[dict[str, Any], str]:
    """The restore's last check, recorded on the run: the live environment is the one before."""
    ev, diffs = await verify(ex, step)
    await ex.update_context(restore_verification={"differences": diffs, **ev})
    if diffs:
        raise StepFailed("the restored environment differs: " + "; ".join(diffs))
    return ev, "restored and verified: old version, old schema, records equal, logons served"
