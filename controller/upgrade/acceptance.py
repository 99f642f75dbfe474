"""The acceptance hold: the guide's "Testing a live upgrade" table, before users return.

The upgraded cluster is smoke-checked, compared (the 20 records) and backed up while users are
still locked out; then the run waits as ``awaiting_acceptance`` with this table. The rows
crmcluster checked itself are filled in with their evidence (the logon on every server, the
library); the others are the operator's — or the customer's — to test and tick, each with a note,
in ``POST /upgrades/{id}/accept`` (``{"rows": [...], "note": "..."}``). Only then do users return.

    table = testing_table(run, steps)            # at the hold: [{id, test, by, status, evidence}]
    accepted = accept_table(table, ticked={"mail_merge": "merged a quote"}, ...)
"""

from __future__ import annotations

from typing import Any

from config.api_errors import InvalidInput
from controller.upgrade.model import Local, Phase, Step
from node_agent.protocol import Action

#: The guide's rows, in its order: (id, test action).
ROWS: tuple[tuple[str, str], ...] = (
    ("logon", "Log on is successful"),
    ("mail_merge", "Mail merge / document drop functionality working, and with the correct plugin"),
    ("reports", "Report writer presenting in all formats (HTML, PDF, CSV, XLSX)"),
    ("email_management", "Email management functioning as expected, including customizations"),
    ("regular_functionality", "Functionality regularly used by the customer working as expected"),
    ("third_party", "Previous functional integration with third-party database functioning as expected"),
    ("asp_pages", "Advanced customizations (.ASP pages) functioning as expected"),
    ("custom_icons", "Custom icons copied to new install location"),
    ("exchange", "Outlook and Exchange Integration functioning as expected"),
    (
        "plugins_updated",
        "All plugins (Outlook, xEwareControl Version, and CTI) updated and working as expected",
    ),
    ("plugins_match", "All plugins compatible with, and match, the upgraded version of Sage CRM"),
    ("library", "Library location is correct"),
    ("records", "Add/Find/Edit/Delete records for each entity working as expected"),
    ("help", "System help functioning as expected"),
    ("data_upload", "Data upload functioning as expected"),
    ("dashboard", "Interactive dashboard loads successfully (My CRM | Dashboard)"),
    (
        "company_dashboard",
        "Interactive dashboard loads successfully in the Company context (Company context | Dashboard), "
        "and the default dashboard is the Company Summary dashboard",
    ),
)
ROW_IDS = frozenset(r for r, _ in ROWS)
#: The rows crmcluster checks itself (the others are the operator's to tick).
CHECKED = frozenset({"logon", "library"})

PASSED, FAILED, TO_TICK, TICKED, NOT_TICKED = "passed", "failed", "to tick", "ticked", "not ticked"
CRMCLUSTER, OPERATOR = "crmcluster", "operator"


def _after(steps: list[Step], action: str) -> list[Step]:
    return [s for s in steps if s.phase == Phase.AFTER.value and s.action == action]


def _checked(row: str, steps: list[Step]) -> tuple[str, dict[str, Any]]:
    """``(status, evidence)`` of a row crmcluster checked, from the run's own steps."""
    smoke = _after(steps, Local.SMOKE_CHECK.value)
    if row == "logon":
        warm = _after(steps, Action.WARMUP_LOGON.value)
        per_node: dict[str, Any] = {}
        for s in warm:
            per_node.setdefault(s.node or "?", {})["warmup_logon"] = s.message or s.status.value
        for s in smoke:
            logon = (s.result or {}).get("logon", s.status.value)
            per_node.setdefault(s.node or "?", {})["logon_page"] = logon
        ok = bool(warm) and all(s.status.done for s in warm + smoke)
        return (PASSED if ok else FAILED), {"servers": per_node}
    # library: probe_library on every server, in its smoke check
    per_node = {s.node or "?": (s.result or {}).get("library") for s in smoke}
    ok = bool(smoke) and all(s.status.done for s in smoke)
    return (PASSED if ok else FAILED), {"servers": per_node}


def testing_table(steps: list[Step]) -> list[dict[str, Any]]:
    """The table as the hold shows it: crmcluster's rows with evidence, the others to tick."""
    rows: list[dict[str, Any]] = []
    for rid, text in ROWS:
        if rid in CHECKED:
            status, evidence = _checked(rid, steps)
            rows.append({"id": rid, "test": text, "by": CRMCLUSTER, "status": status, "evidence": evidence})
        else:
            rows.append({"id": rid, "test": text, "by": OPERATOR, "status": TO_TICK, "evidence": None})
    return rows


def accept_table(
    table: list[dict[str, Any]], *, ticked: dict[str, str | None], actor: str, at: str
) -> list[dict[str, Any]]:
    """The table with the operator's ticks (unknown row ids are refused)."""
    unknown = sorted(set(ticked) - ROW_IDS)
    if unknown:
        raise InvalidInput(f"rows: unknown row {unknown[0]!r}", details={"known": [r for r, _ in ROWS]})
    out = []
    for row in table:
        row = dict(row)
        if row["id"] in ticked:
            row.update(ticked_by=actor, ticked_at=at, note=ticked[row["id"]])
            if row["by"] == OPERATOR:
                row["status"] = TICKED
        elif row["by"] == OPERATOR:
            row["status"] = NOT_TICKED
        out.append(row)
    return out


def gate_of(steps: list[Step]) -> Step | None:
    return next((s for s in steps if s.action == Local.ACCEPTANCE.value), None)
