"""The shared document library (the guide: a UNC network path every web server can reach, set as
"Physical root directory for mail merged documents" — ``DocStore`` — and "Default document
templates location for mail merge" — ``DocTemplates``).

Verification has every registered node write, read back and delete a probe file under each path
(the agent's ``probe_library``); the answer lists each node's result, so one server that cannot
write the share is named.
"""

from __future__ import annotations

import asyncio
from typing import Any

from config.sysparams import ClusterConfig
from config.windows_paths import within_shares
from controller.context import ControllerContext
from controller.errors import InvalidChange
from controller.jobs.runner import new_op_id, run_agent_op
from controller.jobs.store import StepError
from controller.registry.cluster import read_config
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Action, LibraryParams, LibraryProbeResult


def allowed_shares(ctx: ControllerContext, config: ClusterConfig) -> list[str]:
    """The shares the library may be on: the setting's, else the one(s) it is on now."""
    if ctx.settings.library_shares:
        return list(ctx.settings.library_shares)
    return [p for p in (config.doc_store, config.doc_templates) if p]


def check_on_shares(ctx: ControllerContext, config: ClusterConfig, paths: list[str | None]) -> None:
    """Refuse library paths on another server or share than the configured one (422).

    Every agent probes the library as the Windows account it runs as, which sends that account's
    credentials to the server named: a path on any other host would hand them to it."""
    shares = allowed_shares(ctx, config)
    if not shares:
        return  # the first library of the cluster: any share that is not an administrative one
    for path in paths:
        if path and not within_shares(path, shares):
            raise InvalidChange(
                f"{path} is not on the library's share ({', '.join(shares)}); "
                "set CRMCLUSTER_LIBRARY_SHARES to move the library to another share",
                details={"path": path, "shares": shares},
            )


async def get(ctx: ControllerContext) -> dict[str, Any]:
    config = await read_config(ctx)
    return {"doc_store": config.doc_store, "doc_templates": config.doc_templates}


async def set_paths(ctx: ControllerContext, changes: dict[str, str | None]) -> dict[str, Any]:
    async with ctx.crm_engine.begin() as conn:
        check_on_shares(ctx, await ctx.sysparams.read(conn), list(changes.values()))
        config = await ctx.sysparams.write(conn, changes)
    return {"doc_store": config.doc_store, "doc_templates": config.doc_templates}


async def _probe(ctx: ControllerContext, node: NodeRecord, path: str) -> dict[str, Any]:
    try:
        record = await run_agent_op(
            ctx, node, Action.PROBE_LIBRARY, LibraryParams(path=path), op_id=new_op_id("library")
        )
    except StepError as exc:
        return {"path": path, "ok": False, "message": str(exc)}
    probe = record.result_as(LibraryProbeResult)
    ok = probe.reachable and probe.writable
    if ok:
        message = "wrote, read back and deleted a probe file"
    else:
        message = probe.message or ("not writable" if probe.reachable else "not reachable")
    return {"path": path, "ok": ok, "message": message, "result": record.result}


async def verify(ctx: ControllerContext, paths: list[str] | None = None) -> dict[str, Any]:
    """Every node probes every path (default: DocStore and DocTemplates as set)."""
    config = await read_config(ctx)
    if not paths:
        paths = [p for p in (config.doc_store, config.doc_templates) if p]
        if not paths:
            raise InvalidChange("no library path is set: PUT /api/v1/library with doc_store first")
    else:
        if not allowed_shares(ctx, config):
            raise InvalidChange("no library is set yet: PUT /api/v1/library with doc_store first")
        check_on_shares(ctx, config, list(paths))
    nodes = await ctx.registry.list_nodes()

    async def node_result(n: NodeRecord) -> dict[str, Any]:
        probes = [await _probe(ctx, n, p) for p in paths]
        failed = [p for p in probes if not p["ok"]]
        return {
            "name": n.name,
            "ok": not failed,
            "message": failed[0]["message"] if failed else "wrote, read back and deleted a probe file",
            "probes": probes,
        }

    results = await asyncio.gather(*(node_result(n) for n in nodes))
    return {"paths": paths, "ok": all(r["ok"] for r in results) and bool(results), "nodes": list(results)}
