"""The cluster as ``GET /api/v1/cluster`` shows it: the registry's nodes, the multi-server settings
read from ``Custom_SysParams``, and every violated invariant as a warning.

    {"nodes": [{name, fqdn, agent_url, roles, state, weight, version, logged_on, last_heartbeat}],
     "sysparams": {server_names, fq_server_names, do_load_balancing, dtls_server_name, http_port,
                   outlook_port, doc_store, doc_templates},
     "warnings": [{code, message, nodes}]}
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from config.database import unavailable_errors
from config.errors import DatabaseUnavailable
from config.sysparams import ClusterConfig
from controller.context import ControllerContext
from controller.registry import invariants
from controller.registry.nodes import NodeRecord

log = logging.getLogger("crmcluster.controller")


async def read_config(ctx: ControllerContext) -> ClusterConfig:
    with unavailable_errors("CRM database"):
        async with ctx.crm_engine.connect() as conn:
            return await ctx.sysparams.read(conn)


async def nodes_with_counts(ctx: ControllerContext) -> list[NodeRecord]:
    """The registered nodes with logged-on users counted now (the stored count if the CRM DB is away)."""
    nodes = await ctx.registry.list_nodes()
    try:
        counts = {k.lower(): v for k, v in (await ctx.sessions.counts()).items()}
    except DatabaseUnavailable as exc:
        log.warning("cannot count logged-on users: %s", exc)
        return nodes
    return [replace(n, logged_on=counts.get(n.name.lower(), 0)) for n in nodes]


async def view(ctx: ControllerContext) -> dict[str, Any]:
    nodes = await nodes_with_counts(ctx)
    config = await read_config(ctx)
    warnings = invariants.check(nodes, config)
    warnings += invariants.agent_url_warnings(nodes, ctx.advertised_agent_urls)
    warnings += invariants.held_down_warnings(ctx.liveness_guard.held, ctx.liveness_guard.held_reason)
    ctx.metrics.refresh(nodes, [w.code for w in warnings])
    return {
        "nodes": [n.public() for n in nodes],
        "sysparams": config.model_dump(),
        "warnings": invariants.as_json(warnings),
    }


async def check_invariants(ctx: ControllerContext) -> list[invariants.ClusterWarning]:
    """Check the invariants now (the heartbeat watch does, every pass): refresh the gauges and log
    each warning when it appears and when it clears, so a violation is noticed without a reader."""
    nodes = await ctx.registry.list_nodes()
    warnings = invariants.check(nodes, await read_config(ctx))
    ctx.metrics.refresh(nodes, [w.code for w in warnings])
    now = {(w.code, tuple(w.nodes)): w for w in warnings}
    for key in now.keys() - ctx.warnings_seen:
        log.warning("cluster invariant violated: %s (%s)", now[key].message, now[key].code)
    for code, names in ctx.warnings_seen - now.keys():
        log.info("cluster invariant restored: %s%s", code, f" ({', '.join(names)})" if names else "")
    ctx.warnings_seen = set(now)
    return warnings
