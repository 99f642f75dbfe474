"""``GET /api/v1/cluster/audit`` (``crmcluster audit``): the cluster read against the guide, changing
nothing. Each part is one chapter's requirements, judged per server with its evidence:

    prerequisites   "Server software requirements", "Database servers", the memory rule
                    (:mod:`controller.cluster_ops.prerequisites`)
    license         the installed license key of every server, one key for all ("Your license
                    key can be used on all servers in the cluster"), what it gives where readable
                    (:mod:`controller.cluster_ops.license_key`)

The answer: ``status`` (the worst part's), ``parts`` by name, and ``findings`` — every check that
is not ``pass``, one line each (part, node, check, status, message, command) for a table.
"""

from __future__ import annotations

import asyncio
from typing import Any

from controller.cluster_ops import license_key, prerequisites
from controller.context import ControllerContext
from controller.jobs.runner import new_op_id, run_agent_op
from controller.jobs.store import StepError
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Action, OperationRecord

#: Seconds each server's read-only check may take.
CHECK_TIMEOUT = 60.0


async def _prerequisites(ctx: ControllerContext, nodes: list[NodeRecord]) -> dict[str, Any]:
    async def one(node: NodeRecord) -> OperationRecord | str:
        try:
            return await run_agent_op(
                ctx,
                node,
                Action.CHECK_PREREQUISITES,
                op_id=new_op_id("audit.check_prerequisites"),
                timeout=CHECK_TIMEOUT,
            )
        except StepError as exc:
            return str(exc)

    results = await asyncio.gather(*(one(n) for n in nodes))
    return prerequisites.part(
        {n.name: prerequisites.node_report(r) for n, r in zip(nodes, results, strict=True)}
    )


def findings(parts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every check that is not ``pass``, flattened (worst first, then by part, node, check)."""
    rows = [
        {"part": name, "node": node, **{k: c[k] for k in ("check", "status", "message", "command")}}
        for name, p in parts.items()
        for node, rep in p.get("nodes", {}).items()
        for c in rep["checks"]
        if c["status"] != "pass"
    ]
    rank = {"fail": 0, "warn": 1}
    return sorted(rows, key=lambda r: (rank.get(r["status"], 2), r["part"], r["node"], r["check"]))


async def run(ctx: ControllerContext) -> dict[str, Any]:
    nodes = [n for n in await ctx.registry.list_nodes() if n.agent_url]
    prereqs, keys = await asyncio.gather(_prerequisites(ctx, nodes), license_key.installed(ctx))
    parts = {
        "prerequisites": prereqs,
        "license": {**license_key.audit_part(keys), "applied": await license_key.applied(ctx)},
    }
    return {
        "checked_at": ctx.clock().isoformat(),
        "status": prerequisites.worst([p["status"] for p in parts.values()]),
        "parts": parts,
        "findings": findings(parts),
    }
