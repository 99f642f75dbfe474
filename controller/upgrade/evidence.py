"""Reading what agents report into the evidence the upgrade keeps and judges by.

Each function takes an operation's ``result`` and returns the facts the orchestrator and the
checklist need — a backup's file, size and checksum; an upgrade log's failed scripts and "NB must be
fixed" lines; database sessions by host; a comparison of record fingerprints. They are lenient
about key names (drivers differ) and strict about meaning: a backup without a size and a checksum
is not verified, a log without a script list is not read.
"""

from __future__ import annotations

from typing import Any


def _first(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def backup_evidence(result: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """``({path, bytes, sha256, ...}, problem)``; ``problem`` is None when the backup is verified."""
    r = dict(result or {})
    manifest = r.get("manifest")
    merged: dict[str, Any] = {**(manifest if isinstance(manifest, dict) else {}), **r}
    ev = {
        "path": _first(merged, "destination", "path", "source", "folder", "location"),
        "bytes": _first(merged, "bytes", "size", "size_bytes"),
        "sha256": _first(merged, "sha256", "checksum"),
    }
    for k in ("file", "files", "backend", "schema_version", "version", "verified"):
        if merged.get(k) is not None:
            ev[k] = merged[k]
    if ev["path"] is None:
        return ev, "the agent did not say where the backup is"
    if not isinstance(ev["bytes"], int) or ev["bytes"] <= 0:
        return ev, "the backup is empty or its size is unknown"
    if not ev["sha256"]:
        return ev, "the backup has no checksum"
    if merged.get("verified") is False:
        return ev, "the agent could not verify the backup"
    return ev, None


def upgrade_log_findings(result: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """``(evidence, problems)``: every failed script and every "NB must be fixed" line is a problem."""
    r = dict(result or {})
    scripts = r.get("scripts") or []
    failed = list(r.get("failed_scripts") or [])
    for s in scripts:
        if isinstance(s, dict) and s.get("success") is False and s.get("name") not in failed:
            failed.append(str(s.get("name")))
    must_fix = [str(x) for x in (r.get("must_fix") or r.get("nb_must_be_fixed") or [])]
    error_files = [str(x) for x in (r.get("error_files") or [])]
    ev = {
        "scripts": len(scripts),
        "succeeded": len(scripts) - len(failed),
        "failed_scripts": failed,
        "must_fix": must_fix,
        "error_files": error_files,
        "from_version": r.get("from_version"),
        "to_version": r.get("to_version"),
    }
    problems = [f"script {s} failed" for s in failed]
    problems += [f"NB must be fixed: {line}" for line in must_fix]
    problems += [f"errors in {f}" for f in error_files]
    if not scripts:
        problems.append("the upgrade log lists no scripts")
    if r.get("completed") is False:
        problems.append("the upgrade did not complete")
    return ev, problems


def sessions_by_host(result: dict[str, Any] | None) -> dict[str, int]:
    """Open database connections per host, whatever shape the agent reports them in."""
    r = dict(result or {})
    raw = r.get("sessions", r.get("hosts", r))
    out: dict[str, int] = {}
    if isinstance(raw, dict):
        for host, v in raw.items():
            if isinstance(v, dict):
                out[str(host)] = sum(int(x) for x in v.values() if isinstance(x, int | float))
            elif isinstance(v, int | float):
                out[str(host)] = int(v)
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict):
                host = str(_first(item, "host", "host_name", "hostname") or "?")
                n = _first(item, "connections", "count", "sessions")
                out[host] = out.get(host, 0) + (int(n) if isinstance(n, int | float) else 1)
    return out


def host_matches(host: str, node: str, fqdn: str | None) -> bool:
    h = host.lower()
    names = {node.lower()}
    if fqdn:
        names.add(fqdn.lower())
        names.add(fqdn.split(":")[0].lower())
    return h in names or h.split(".")[0] == node.lower()


def compare_fingerprints(baseline: dict[str, Any], now: dict[str, Any], *, schema: bool) -> list[str]:
    """What differs between two ``fingerprint_records`` results, one line per difference."""
    diffs: list[str] = []
    before = baseline.get("records") or {}
    after = now.get("records") or {}
    for rid, digest in before.items():
        if rid not in after or after.get(rid) is None:
            if digest is not None:
                diffs.append(f"company {rid} is missing")
        elif after[rid] != digest:
            diffs.append(f"company {rid} differs from the baseline")
    if schema:
        if baseline.get("schema_version") != now.get("schema_version"):
            diffs.append(
                f"schema version is {now.get('schema_version')!r}, was {baseline.get('schema_version')!r}"
            )
        if baseline.get("schema") and baseline.get("schema") != now.get("schema"):
            diffs.append("the database schema differs from the one before the upgrade")
    return diffs


def baseline_ids(baseline: dict[str, Any]) -> list[int]:
    return sorted(int(k) for k in (baseline.get("records") or {}))
