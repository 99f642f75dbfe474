"""Metadata refresh: after a customization every web server's eware.dll and Tomcat reload their
metadata (the guide's "Metadata is refreshed on all servers"). Every registered node is asked at
once; the answer says which confirmed and why each other did not.
"""

from __future__ import annotations

import asyncio
from typing import Any

from controller.context import ControllerContext
from controller.jobs.runner import new_op_id, run_agent_op
from controller.jobs.store import StepError
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Action, MetadataResult


async def refresh(ctx: ControllerContext) -> dict[str, Any]:
    nodes = await ctx.registry.list_nodes()
    op = new_op_id("metadata")

    async def one(n: NodeRecord) -> dict[str, Any]:
        try:
            record = await run_agent_op(ctx, n, Action.RELOAD_METADATA, op_id=f"{op}:{n.name}")
        except StepError as exc:
            return {"name": n.name, "ok": False, "message": str(exc)}
        reloaded = record.result_as(MetadataResult)
        return {
            "name": n.name,
            "ok": True,
            "message": f"metadata reloaded at {reloaded.reloaded_at.isoformat()}",
            "result": record.result,
        }

    results = list(await asyncio.gather(*(one(n) for n in nodes)))
    return {
        "confirmed": [r["name"] for r in results if r["ok"]],
        "failed": [{"name": r["name"], "message": r["message"]} for r in results if not r["ok"]],
        "nodes": results,
    }
