"""Reading what agents report into the evidence the upgrade keeps and judges by.

Each function takes an operation's result — already parsed into its action's model of
:mod:`node_agent.protocol`, so a field the agent does not send cannot be read here — and returns
the facts the orchestrator and the checklist need: a backup's path, size and checksum; an upgrade
log's failed scripts and "NB must be fixed" lines; database sessions by host; a comparison of
record fingerprints. They are strict about meaning: a backup without a size, or neither hashed nor
verified, is not verified; a log without a script list is not read.
"""

from __future__ import annotations

from typing import Any

from node_agent.protocol import BackupResult, DatabaseSessionsResult, FingerprintResult, UpgradeLogResult


def backup_evidence(result: BackupResult) -> tuple[dict[str, Any], str | None]:
    """``({path, bytes, sha256, ...}, problem)``; ``problem`` is None when the backup is verified."""
    ev: dict[str, Any] = {"path": result.path, "bytes": result.size, "sha256": result.sha256}
    extra = {
        "file": result.file,
        "files": result.files,
        "backend": result.backend,
        "schema_version": result.schema_version,
        "version": result.version,
        "disk": result.disk,
        "verified": result.verified,
        "finished_at": result.finished_at.isoformat(),
    }
    ev.update({k: v for k, v in extra.items() if v is not None})
    if not result.path:
        return ev, "the agent did not say where the backup is"
    if result.size <= 0:
        return ev, "the backup is empty"
    if not result.verified:
        return ev, "the agent could not verify the backup"
    if not result.sha256 and result.backend != "mssql":
        # Only SQL Server's own page checksums (RESTORE VERIFYONLY) stand in for a content hash.
        return ev, "the backup has no checksum"
    return ev, None


def upgrade_log_findings(result: UpgradeLogResult) -> tuple[dict[str, Any], list[str]]:
    """``(evidence, problems)``: every failed script and every "NB must be fixed" line is a problem."""
    failed = list(result.failed_scripts)
    failed += [s.name for s in result.scripts if not s.success and s.name not in failed]
    ev = {
        "scripts": len(result.scripts),
        "succeeded": len(result.scripts) - len(failed),
        "failed_scripts": failed,
        "must_fix": list(result.must_fix),
        "error_files": list(result.error_files),
        "from_version": result.from_version,
        "to_version": result.to_version,
    }
    problems = to_fix(result)
    if result.script_logs:
        ev["script_logs"] = dict(result.script_logs)
    if not result.scripts:
        problems.append("the upgrade log lists no scripts")
    if not result.completed:
        problems.append("the upgrade did not complete")
    return ev, problems


def to_fix(result: UpgradeLogResult) -> list[str]:
    """What the guide says to correct by hand: failed scripts, "NB must be fixed" lines, ``*`` files."""
    failed = list(result.failed_scripts)
    failed += [sc.name for sc in result.scripts if not sc.success and sc.name not in failed]
    problems = [f"script {s} failed" for s in failed]
    problems += [f"NB must be fixed: {line}" for line in result.must_fix]
    problems += [f"errors in {f}" for f in result.error_files]
    return problems


def sessions_by_host(result: DatabaseSessionsResult) -> dict[str, int]:
    """Open database connections per client host."""
    return dict(result.hosts)


def host_matches(host: str, node: str, fqdn: str | None) -> bool:
    h = host.lower()
    names = {node.lower()}
    if fqdn:
        names.add(fqdn.lower())
        names.add(fqdn.split(":")[0].lower())
    return h in names or h.split(".")[0] == node.lower()


def compare_fingerprints(baseline: FingerprintResult, now: FingerprintResult, *, schema: bool) -> list[str]:
    """What differs between two ``fingerprint_records`` results, one line per difference."""
    diffs: list[str] = []
    before, after = baseline.records, now.records
    for rid, digest in before.items():
        if after.get(rid) is None:
            if digest is not None:
                diffs.append(f"company {rid} is missing")
        elif after[rid] != digest:
            diffs.append(f"company {rid} differs from the baseline")
    if schema:
        if baseline.schema_version != now.schema_version:
            diffs.append(f"schema version is {now.schema_version!r}, was {baseline.schema_version!r}")
        if baseline.schema_hash and baseline.schema_hash != now.schema_hash:
            diffs.append("the database schema differs from the one before the upgrade")
    return diffs


def baseline_ids(baseline: FingerprintResult) -> list[int]:
    return sorted(int(k) for k in baseline.records)


def baseline_of(context: dict[str, Any]) -> FingerprintResult | None:
    """The run's record baseline (a ``fingerprint_records`` result kept in its context), if taken."""
    raw = context.get("baseline")
    return FingerprintResult.model_validate(raw) if raw else None
