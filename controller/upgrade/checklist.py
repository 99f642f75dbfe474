"""The guide's "Sample upgrade checklist", filled in from a run: each line done, failed, not
applicable (or still pending / not done) with its evidence — backup files and sizes, log findings,
the record comparison — as JSON, and as an HTML page fit to hand to a customer.

The test-upgrade sections of the guide's checklist happen in a test environment, outside a live
run: they are listed as not applicable so the customer sees the whole checklist. The live sections
are judged from the run's steps; lines that only the customer can do (their own functional and
customization testing) say so. When the live environment was restored, the guide's "Restoring a
Live Environment" steps are added with their evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

from jinja2 import Environment

from config.secrets import redact_mapping
from controller.upgrade import acceptance
from controller.upgrade.estimate import measured_downtime
from controller.upgrade.model import TERMINAL, Phase, Run, Step, StepStatus, iso

DONE, FAILED, NA, PENDING, NOT_DONE = "done", "failed", "not applicable", "pending", "not done"
_TEST = "part of the test upgrade, done in the test environment before this live run"
_CUSTOMER = "by the customer, on the upgraded system"


def _judge(steps: list[Step], *, finished: bool) -> str:
    if not steps:
        return NA
    if any(s.status in (StepStatus.FAILED,) for s in steps):
        return FAILED
    if all(s.status.done for s in steps):
        return DONE
    return NOT_DONE if finished else PENDING


def _pick(steps: Iterable[Step], *, action: str | None = None, phase: str | None = None) -> list[Step]:
    return [
        s for s in steps if (action is None or s.action == action) and (phase is None or s.phase == phase)
    ]


def _ev(steps: list[Step]) -> list[dict[str, Any]]:
    return [
        {
            "node": s.node,
            "step": s.id,
            "status": s.status.value,
            "attempt": s.attempt,
            "finished_at": iso(s.finished_at),
            "message": s.message,
            "evidence": s.result,
        }
        for s in steps
    ]


def _testing(run: Run, steps: list[Step], *, finished: bool) -> list[dict[str, Any]]:
    """The guide's "Testing a live upgrade" table: crmcluster's rows with their evidence, the
    operator's as ticked at the acceptance hold (with the note), or not done."""
    gate = acceptance.gate_of(steps)
    table = list((gate.result or {}).get("table") or []) if gate is not None else []
    if not table:
        table = acceptance.testing_table(steps)
    accepted = gate is not None and gate.status.done
    note = (gate.result or {}).get("note") if accepted and gate is not None else None
    lines = []
    for row in table:
        if row["by"] == acceptance.CRMCLUSTER:
            smoke_ran = bool(_pick(steps, action="smoke_check"))
            status = (
                (DONE if row["status"] == acceptance.PASSED else FAILED)
                if smoke_ran
                else (NOT_DONE if finished else PENDING)
            )
            ev: Any = row.get("evidence") if smoke_ran else None
            lines.append(_line(row["test"], status, ev, "checked by crmcluster on every server"))
        elif row.get("ticked_by"):
            ev = {"ticked_by": row["ticked_by"], "ticked_at": row.get("ticked_at"), "note": row.get("note")}
            lines.append(_line(row["test"], DONE, ev, row.get("note") or note))
        elif gate is None:
            lines.append(
                _line(
                    row["test"], NOT_DONE if finished else PENDING, None, "no acceptance hold was asked for"
                )
            )
        else:
            waiting = "ticked by the operator at the acceptance hold"
            lines.append(_line(row["test"], NOT_DONE if accepted or finished else PENDING, None, waiting))
    return lines


def _log_lines(
    run: Run, logs: list[Step], line: Any, from_steps: Any, finished: bool
) -> list[dict[str, Any]]:
    """The guide's "Upgrade logs" rows: the errors found, and how each was resolved by hand (the
    notes recorded with ``resolve``), or that none needed it."""
    failed = [s for s in logs if s.status == StepStatus.FAILED]
    waiting = [s for s in logs if s.status == StepStatus.AWAITING_FIX]
    resolutions = run.context.get("resolutions") or {}
    resolved = [{"step": s.id, "node": s.node, **resolutions[s.id]} for s in logs if s.id in resolutions]
    notes = "; ".join(f"{r['node']}: {r['note']} ({r['by']})" for r in resolved) or None
    all_done = bool(logs) and all(s.status.done for s in logs)
    investigate = "Investigate each error and document resolution or outcome"
    complete = "Complete resolutions for each error"
    rows = [from_steps("Review upgrade logs for errors", logs)]
    if failed:
        rows += [
            line(investigate, FAILED, _ev(failed)),
            line(complete, FAILED, _ev(failed), "the run failed"),
        ]
    elif waiting:
        ev = [{"step": s.id, "node": s.node, "to_fix": (s.result or {}).get("unresolved")} for s in waiting]
        note = "awaiting a fix by hand: resolve each step, then resume"
        rows += [
            line(investigate, PENDING, ev + resolved, notes or note),
            line(complete, PENDING, None, note),
        ]
    elif resolved and all_done:
        rows += [line(investigate, DONE, resolved, notes), line(complete, DONE, resolved, notes)]
    elif all_done:
        rows += [
            line(investigate, DONE, _ev(logs), "no errors found in the upgrade logs"),
            line(complete, NA, None, "no error to resolve"),
        ]
    else:
        status = _judge(logs, finished=finished)
        rows += [line(investigate, status, None), line(complete, status, None)]
    return rows


def _estimate_line(
    run: Run, steps: list[Step], warnings: list[dict[str, Any]], *, finished: bool
) -> dict[str, Any]:
    """The plan's downtime estimate (and where its durations came from), the risks, and once users
    are back the downtime measured; not done without an estimate."""
    text = "Estimate downtime for production system and document risks to client"
    est = run.context.get("estimate")
    if not est:
        return _line(text, NOT_DONE if finished else PENDING, None, "no estimate was made for this run")
    risks = [
        {
            "finding": f["name"],
            "status": f["status"],
            "message": f["message"],
            "overridden": f.get("overridden", False),
        }
        for f in warnings
    ]
    measured = measured_downtime(run.context, steps)
    evidence = {
        "estimated_downtime_seconds": est.get("downtime_seconds"),
        "source": est.get("source"),
        "measured": measured,
        "servers": len(run.nodes),
        "risks": risks,
    }
    note = f"estimated {_hms(est.get('downtime_seconds'))} of downtime, from {est.get('source')}"
    if measured:
        note += (
            f"; measured {_hms(measured['without_hold_seconds'])} "
            f"(+ {_hms(measured['acceptance_hold_seconds'])} acceptance hold)"
        )
    return _line(text, DONE, evidence, note)


def _hms(seconds: Any) -> str:
    s = round(float(seconds or 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def _data_loss(run: Run) -> list[dict[str, Any]]:
    accepted = run.context.get("data_loss_accepted")
    if not run.context.get("returned_at"):
        return []
    text = "Data written since users returned accepted as lost"
    if accepted:
        return [_line(text, DONE, accepted, f"accepted by {accepted.get('by')}")]
    return [_line(text, NOT_DONE, None, "users were back: a rollback needs accept_data_loss_since")]


def _line(text: str, status: str, evidence: Any = None, note: str | None = None) -> dict[str, Any]:
    return {"action": text, "status": status, "evidence": redact_mapping(evidence), "note": note}


def build_checklist(run: Run, steps: list[Step]) -> dict[str, Any]:
    finished = run.status in TERMINAL
    sections: list[dict[str, Any]] = []

    def line(text: str, status: str, evidence: Any = None, note: str | None = None) -> dict[str, Any]:
        return {"action": text, "status": status, "evidence": redact_mapping(evidence), "note": note}

    def from_steps(text: str, picked: list[Step], note: str | None = None) -> dict[str, Any]:
        status = _judge(picked, finished=finished)
        if status == DONE and any(s.result is None and not s.message for s in picked):
            # No row is marked done without its evidence.
            status, note = (NOT_DONE if finished else PENDING), "a step left no evidence"
        return line(text, status, _ev(picked), note)

    def test(title: str, lines: list[str]) -> None:
        sections.append({"title": title, "lines": [line(t, NA, None, _TEST) for t in lines]})

    test(
        "Manual backup \N{EN DASH} pre-test upgrade",
        [
            "Complete backup of Sage CRM database",
            "Complete backup of Sage CRM program files",
            "Complete backup of Sage CRM registry key",
        ],
    )
    test(
        "Generate test environment",
        [
            "Source trial license key for current version (with EM)",
            "Source trial license key for upgrade version (with EM)",
            "Install dependent third party software on test environment",
            "Install current Sage CRM version using trial license key",
            "Restore manual backup database to test environment",
            "Delete vSentinal out of the views in the restored Sage CRM database",
            "Restore Sage program files to test environment",
            "Confirm Windows NT security has been correctly set",
            "Restart IIS",
            "Complete base line testing (UAT test)",
            "Script customizations using component manager and Zip",
        ],
    )
    test(
        "Test upgrade",
        ["Complete install shield upgrade to current version", "Upgrade to latest service pack of Sage CRM"],
    )

    freeze = Phase.FREEZE.value
    signoff = _pick(steps, action="signoff")
    lock = _pick(steps, action="lock_out", phase=freeze) + _pick(steps, action="verify_disconnected")
    warnings = [f for f in run.preflight if f["status"] != "pass"]
    sections.append(
        {
            "title": "Freeze live system",
            "lines": [
                _estimate_line(run, steps, warnings, finished=finished),
                from_steps(
                    "Obtain client sign off to move forward with live upgrade",
                    signoff,
                    None if signoff else "no sign-off gate was asked for",
                ),
                from_steps("Lock users out of the Sage CRM system as server is taken offline", lock),
            ],
        }
    )
    backup = Phase.BACKUP.value
    sections.append(
        {
            "title": "Live manual backup \N{EN DASH} pre live upgrade",
            "lines": [
                from_steps(
                    "Complete backup of Sage CRM database",
                    _pick(steps, action="backup_database", phase=backup)
                    + _pick(steps, action="backup_views", phase=backup),
                ),
                from_steps(
                    "Complete backup of Sage CRM program files",
                    _pick(steps, action="backup_program_files", phase=backup),
                ),
                from_steps(
                    "Complete backup of Sage CRM registry key",
                    _pick(steps, action="backup_registry", phase=backup),
                ),
            ],
        }
    )
    installers = _pick(steps, action="run_installer")
    by_hand = [s.node or "?" for s in installers if (s.result or {}).get("installer") == "manual"]
    waiting = [s.node or "?" for s in installers if s.status == StepStatus.AWAITING_OPERATOR]
    installer_note = "the database server first, then the others in batches"
    if by_hand:
        installer_note += (
            f"; the wizard run by hand on {', '.join(by_hand)} (the manual installer), "
            "confirmed by the operator with the note in each step's evidence, then verified"
        )
    if waiting:
        installer_note += f"; waiting for an operator to run the wizard on {', '.join(waiting)}"
    logs = _pick(steps, action="read_upgrade_log")
    sections.append(
        {
            "title": "Live upgrade",
            "lines": [
                from_steps("Complete install shield upgrade to current version", installers, installer_note),
                line(
                    "Upgrade to latest service pack of Sage CRM",
                    NA,
                    None,
                    f"the target {run.target_version} is installed by the run; "
                    "service packs are separate installers",
                ),
            ],
        }
    )
    sections.append({"title": "Upgrade logs", "lines": _log_lines(run, logs, line, from_steps, finished)})
    after = Phase.AFTER.value
    sections.append(
        {
            "title": "Live manual backup \N{EN DASH} post live upgrade",
            "lines": [
                from_steps(
                    "Complete backup of Sage CRM database",
                    _pick(steps, action="backup_database", phase=after),
                ),
                from_steps(
                    "Complete backup of Sage CRM program files",
                    _pick(steps, action="backup_program_files", phase=after),
                ),
                from_steps(
                    "Complete backup of Sage CRM registry key",
                    _pick(steps, action="backup_registry", phase=after),
                ),
            ],
        }
    )
    smoke = _pick(steps, action="warmup_logon", phase=after) + _pick(steps, action="smoke_check")
    sections.append(
        {
            "title": "Function testing",
            "lines": [
                from_steps(
                    "Complete generic functionality testing",
                    smoke,
                    "warm-up logon, logon page, SData, library and version on every server",
                ),
                line("Complete additional functionality testing", NA, None, _CUSTOMER),
                from_steps(
                    "Document and resolve any functional irregularities", _pick(steps, action="smoke_check")
                ),
            ],
        }
    )
    sections.append(
        {
            "title": "Client customization testing",
            "lines": [
                line("Complete visual scan of screen customizations", NA, None, _CUSTOMER),
                line("Complete custom functionality testing", NA, None, _CUSTOMER),
                line("Document and resolve any custom irregularities", NA, None, _CUSTOMER),
            ],
        }
    )
    sections.append({"title": "Testing a live upgrade", "lines": _testing(run, steps, finished=finished)})
    baseline = _pick(steps, action="fingerprint_records", phase=Phase.BASELINE.value)
    compared = _pick(steps, action="fingerprint_records", phase=after)
    sections.append(
        {
            "title": "Data integrity testing",
            "lines": [
                from_steps(
                    "Complete random sampling of 20 company records",
                    baseline + compared,
                    "fingerprinted before the upgrade and compared after it",
                ),
                line("Client completes data integrity testing", NA, None, _CUSTOMER),
                line(
                    "Document and resolve any data irregularities",
                    _judge(compared, finished=finished),
                    run.context.get("records_compared"),
                ),
            ],
        }
    )
    restore = _pick(steps, phase=Phase.RESTORE.value)
    if restore:
        sections.append(
            {
                "title": "Restoring a Live Environment",
                "lines": [
                    from_steps(
                        "Restoring the database backup",
                        _pick(restore, action="restore_database"),
                        None if _pick(restore, action="restore_database") else "the database was not changed",
                    ),
                    from_steps(
                        "Restore Sage program files (the <install>_backup folder)",
                        _pick(restore, action="restore_program_files"),
                    ),
                    from_steps("Redirecting the website", _pick(restore, action="redirect_website")),
                    from_steps("Restoring the registry backup", _pick(restore, action="restore_registry")),
                    from_steps("Reregistering the installation", _pick(restore, action="register_dll")),
                    from_steps(
                        "Stopping and restarting IIS",
                        _pick(restore, action="stop_web") + _pick(restore, action="start_web"),
                    ),
                    from_steps(
                        "Verify: old version, old schema, 20 records, logons served",
                        _pick(restore, action="verify_restore"),
                    ),
                    *_data_loss(run),
                ],
            }
        )
    counts: dict[str, int] = {}
    for sec in sections:
        for ln in sec["lines"]:
            counts[ln["status"]] = counts.get(ln["status"], 0) + 1
    return {
        "run": run.id,
        "install_name": run.context.get("install_name"),
        "status": run.status.value,
        "from_version": run.from_version,
        "target_version": run.target_version,
        "servers": [n["name"] for n in run.nodes],
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "lockout": {
            "started_at": run.context.get("lockout_started_at"),
            "ended_at": run.context.get("lockout_ended_at"),
        },
        "message": run.message,
        "summary": counts,
        "sections": sections,
    }


def _summarise(evidence: Any) -> str:
    if isinstance(evidence, list):
        msgs = [e.get("message") for e in evidence if isinstance(e, dict) and e.get("message")]
        return f"{len(evidence)} step(s)" + (f": {msgs[0]}" if msgs else "") + (" …" if len(msgs) > 1 else "")
    if isinstance(evidence, str):
        return evidence
    return "details"


_env = Environment(autoescape=True)
_env.globals["summarise"] = _summarise
_template = _env.from_string(
    (resources.files("controller.upgrade") / "templates" / "checklist.html").read_text(encoding="utf-8")
)


def render_html(checklist: dict[str, Any]) -> str:
    return _template.render(c=checklist)
