"""The guide's "Updating the license key": a new key on every server, as the License Key Update
application puts it, with the differences shown before anything changes.

    PUT /api/v1/license {"license_key": "…", "preview": true}    the differences; nothing changes
    PUT /api/v1/license {"license_key": "…", "preview": false}   202: a job updating every server

The differences (users, features) are the agents' reading of each key (``license_details``): the
installed key of every server against the new key. Where a server cannot read a key's contents
(the windows driver: Sage decodes its keys, and its wizard lists the differences to the person
running it) they are ``None`` and said so, never guessed.

The update runs ``update_license_key`` server by server, the database server first, and only on
servers whose installed key is not already the new one (a repeat changes nothing). Updating a key
registers nothing: the License Key Update application does not register, so no registration of
the key's five is spent (the registration count is the installer's). The key is never stored or
echoed; the job and the audit trail keep its hint.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr

from controller.context import ControllerContext
from controller.errors import AgentsUnavailable, ClusterBusy, InvalidChange
from controller.jobs.runner import agent_step, new_op_id, run_agent_op, run_steps
from controller.jobs.store import StepError
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Action, LicenseDetails, LicenseDetailsParams, LicenseParams

KIND = "license"


def key_hint(key: str) -> str:
    return "…" + key.strip()[-4:]


def differences(before: LicenseDetails, after: LicenseDetails) -> dict[str, Any]:
    """Users and features, old key against new (None where either key could not be read)."""
    users: dict[str, Any] = {"before": before.users, "after": after.users, "change": None}
    if before.users is not None and after.users is not None:
        users["change"] = after.users - before.users
    features: dict[str, Any] | None = None
    if before.features is not None and after.features is not None:
        features = {
            "added": sorted(set(after.features) - set(before.features)),
            "removed": sorted(set(before.features) - set(after.features)),
            "kept": sorted(set(after.features) & set(before.features)),
        }
    same = before.key_hash is not None and before.key_hash == after.key_hash
    return {"same_key": same, "users": users, "features": features}


def summary(diff: dict[str, Any]) -> str:
    if diff["same_key"]:
        return "already this key"
    parts = []
    u = diff["users"]
    parts.append(f"users {u['before']} → {u['after']}" if u["change"] is not None else "users: not readable")
    f = diff["features"]
    if f is None:
        parts.append("features: not readable")
    else:
        if f["added"]:
            parts.append("features added: " + ", ".join(f["added"]))
        if f["removed"]:
            parts.append("features REMOVED: " + ", ".join(f["removed"]))
        if not f["added"] and not f["removed"]:
            parts.append("same features")
    return "; ".join(parts)


async def _nodes(ctx: ControllerContext) -> list[NodeRecord]:
    nodes = [n for n in await ctx.registry.list_nodes() if n.agent_url]
    if not nodes:
        raise ClusterBusy("no registered server has an agent: there is no key to update")
    # The database server first, then ServerNames order as registered.
    return sorted(nodes, key=lambda n: (not n.is_database, n.name))


async def _details(ctx: ControllerContext, node: NodeRecord, key: str | None = None) -> LicenseDetails:
    params = LicenseDetailsParams(license_key=SecretStr(key) if key is not None else None)
    try:
        rec = await run_agent_op(
            ctx, node, Action.LICENSE_DETAILS, params, op_id=new_op_id("license.details"), timeout=60
        )
    except StepError as exc:
        if "did not answer" in str(exc):
            raise AgentsUnavailable(str(exc), details={"node": node.name}) from exc
        raise InvalidChange(str(exc), details={"node": node.name}) from exc
    return rec.result_as(LicenseDetails)


async def installed(ctx: ControllerContext) -> dict[str, LicenseDetails | str]:
    """Every server's installed key as its agent reads it (or why it could not)."""
    nodes = [n for n in await ctx.registry.list_nodes() if n.agent_url]

    async def one(n: NodeRecord) -> LicenseDetails | str:
        try:
            return await _details(ctx, n)
        except (AgentsUnavailable, InvalidChange) as exc:
            return exc.message

    return dict(zip([n.name for n in nodes], await asyncio.gather(*(one(n) for n in nodes)), strict=True))


async def preview(ctx: ControllerContext, key: str) -> dict[str, Any]:
    """The differences on every server; changes nothing."""
    nodes = await _nodes(ctx)
    new = await _details(ctx, nodes[0], key)
    olds = await asyncio.gather(*(_details(ctx, n) for n in nodes))
    servers: dict[str, Any] = {}
    for n, old in zip(nodes, olds, strict=True):
        diff = differences(old, new)
        servers[n.name] = {
            "installed": old.model_dump(exclude_none=True),
            **diff,
            "summary": summary(diff),
        }
    to_update = [name for name, s in servers.items() if not s["same_key"]]
    kinds = {s["summary"] for name, s in servers.items() if name in to_update}
    return {
        "key_hint": key_hint(key),
        "new": new.model_dump(exclude_none=True),
        "servers": servers,
        "to_update": to_update,
        "summary": "; ".join(sorted(kinds)) if to_update else "every server already has this key",
        "registrations_spent": 0,
    }


async def apply(ctx: ControllerContext, key: str) -> dict[str, Any]:
    """Preview, then (when a server needs it) a job updating the key server by server."""
    shown = await preview(ctx, key)
    if not shown["to_update"]:
        return {**shown, "job": None}
    if await ctx.jobs.running(kind=KIND, target="license"):
        raise ClusterBusy("a license key update is already running")
    nodes = {n.name: n for n in await _nodes(ctx)}
    names = shown["to_update"]
    job_id = await ctx.jobs.create(
        KIND,
        target="license",
        # The hash (as the registrations count keys) and the hint: never the key.
        params={"key_hint": shown["key_hint"], "key_hash": shown["new"].get("key_hash"), "servers": names},
        steps=[(name, Action.UPDATE_LICENSE_KEY.value) for name in names],
    )
    params = LicenseParams(license_key=SecretStr(key))
    steps = [
        agent_step(
            ctx, nodes[name], Action.UPDATE_LICENSE_KEY, params, timeout=ctx.settings.operation_timeout
        )
        for name in names
    ]

    async def run() -> None:
        await run_steps(ctx, job_id, steps, kind=KIND)

    ctx.tasks.start(f"job-{job_id}", run)
    return {**shown, "job": await ctx.jobs.get(job_id)}


async def applied(ctx: ControllerContext) -> dict[str, Any] | None:
    """The newest license key update that succeeded: its key's hint and hash, and when."""
    for job in await ctx.jobs.list(kind=KIND, limit=20):
        if job.get("status") == "succeeded":
            params = job.get("params") or {}
            return {
                "key_hint": params.get("key_hint"),
                "key_hash": params.get("key_hash"),
                "finished_at": job.get("finished_at"),
                "job_id": job.get("id"),
            }
    return None


def audit_part(found: dict[str, LicenseDetails | str]) -> dict[str, Any]:
    """The audit's ``license`` part: every server holds the same key ("Your license key can be used
    on all servers in the cluster"), and what it gives where readable."""
    nodes: dict[str, Any] = {}
    hashes: dict[str, str | None] = {}
    for name, d in found.items():
        if isinstance(d, str):
            nodes[name] = {
                "status": "warn",
                "checks": [_check("license_key", "warn", f"could not read the installed key: {d}", None)],
            }
            continue
        hashes[name] = d.key_hash
        value = d.model_dump(exclude_none=True, exclude={"commands"})
        text = f"key {d.key_hint or '(unknown)'}" + (
            f", {d.users} users, {', '.join(d.features or []) or 'no features'}"
            if d.users is not None
            else ""
        )
        nodes[name] = {"status": "pass", "checks": [_check("license_key", "pass", text, value)]}
    known = {h for h in hashes.values() if h}
    if len(known) > 1:
        for name in hashes:
            nodes[name]["status"] = "fail"
            nodes[name]["checks"].append(
                _check("same_key", "fail", "the servers hold different license keys", hashes[name])
            )
    statuses = [n["status"] for n in nodes.values()]
    status = "fail" if "fail" in statuses else "warn" if "warn" in statuses or not nodes else "pass"
    message = (
        "the servers hold different license keys"
        if len(known) > 1
        else f"one license key on {len(nodes)} servers"
        if nodes
        else "no server to read"
    )
    return {"status": status, "message": message, "nodes": nodes}


def _check(name: str, status: str, message: str, value: Any) -> dict[str, Any]:
    return {
        "check": name,
        "status": status,
        "message": message,
        "value": value,
        "command": "license_details (the agent's reading of the installed key)",
        "guide": "Your license key can be used on all servers in the cluster.",
    }
