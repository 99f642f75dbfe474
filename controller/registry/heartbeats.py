"""Heartbeats in, liveness out.

Agents push ``POST /api/v1/agents/{name}/heartbeat`` (a :class:`~node_agent.protocol.Heartbeat`)
every few seconds; each one records the node's observed status and, unless the node is in a held
state, sets it ``up`` (IIS running) or ``down``. :func:`watch` — a supervised loop — makes every
``up`` node that has been silent for ``heartbeat_timeout`` seconds ``down``, keeps the stored
logged-on counts current and checks the cluster's invariants (logging each violation once).
Both read time from the context's clock, so :func:`sweep` is tested by moving a fake clock rather
than by sleeping.
"""

from __future__ import annotations

import asyncio
import logging

from config.errors import DatabaseUnavailable
from controller.cluster_ops.replication_engine import enforce_fence
from controller.context import ControllerContext
from controller.errors import InvalidChange
from controller.registry.cluster import check_invariants
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Heartbeat

log = logging.getLogger("crmcluster.controller.registry.heartbeats")


async def receive(ctx: ControllerContext, name: str, heartbeat: Heartbeat) -> NodeRecord:
    if heartbeat.status.name.lower() != name.lower():
        raise InvalidChange(
            f"heartbeat for {name!r} carries the status of {heartbeat.status.name!r}",
            details={"node": name, "status_name": heartbeat.status.name},
        )
    # Never the heartbeat's agent_url: where the controller sends tokens is set by registration only.
    started = ctx.liveness_guard.monotonic()
    rec = await ctx.heartbeat_writer.observe(name, heartbeat.status)
    ctx.liveness_guard.note_lag(ctx.liveness_guard.monotonic() - started)  # the database behind
    ctx.metrics.heartbeats.labels(name).inc()
    if rec.fenced:
        enforce_fence(ctx, rec)
    return rec


def note_advertised_url(ctx: ControllerContext, rec: NodeRecord, advertised: str | None) -> None:
    """Remember an agent URL a heartbeat advertised when it is not the registered one (a warning)."""
    if advertised and rec.agent_url and advertised.rstrip("/") != rec.agent_url.rstrip("/"):
        if ctx.advertised_agent_urls.get(rec.name) != advertised:
            log.warning(
                "node %s: heartbeat advertises agent URL %s, registered %s (kept)",
                rec.name,
                advertised[:200],
                rec.agent_url,
            )
        ctx.advertised_agent_urls[rec.name] = advertised[:500]
    else:
        ctx.advertised_agent_urls.pop(rec.name, None)


async def sweep(ctx: ControllerContext) -> list[str]:
    """One pass: silent nodes go ``down`` unless the liveness guard holds them (the controller was
    behind, or a storm); logged-on counts refreshed. Returns the nodes marked down."""
    timeout = ctx.settings.heartbeat_timeout
    guard = ctx.liveness_guard
    started = guard.monotonic()
    silent, total = await ctx.registry.silent_nodes(heartbeat_timeout=timeout)
    guard.note_lag(guard.monotonic() - started)  # a slow state database is the controller behind
    decision = guard.decide(silent, cluster_size=total)
    if decision.held:
        ctx.metrics.down_decisions_held.labels(decision.reason).inc(len(decision.held))
        log.warning(
            "holding back %d down decision(s) (%s): %s silent for %.0fs; last lag %.2fs",
            len(decision.held),
            decision.reason,
            ", ".join(decision.held),
            timeout,
            guard.worst_lag,
        )
    ctx.metrics.controller_lag.set(guard.worst_lag)
    guard.worst_lag = 0.0
    down = await ctx.registry.mark_silent_down(heartbeat_timeout=timeout, names=decision.down)
    for name in down:
        log.warning("node %s: no heartbeat for %.0fs; marked down", name, timeout)
    try:
        counts = await ctx.sessions.counts()
    except DatabaseUnavailable as exc:
        log.warning("cannot count logged-on users: %s", exc)
    else:
        await ctx.registry.set_logged_on(counts)
    try:
        await check_invariants(ctx)
    except DatabaseUnavailable as exc:
        log.warning("cannot check the cluster invariants: %s", exc)
    return down


async def watch(ctx: ControllerContext) -> None:
    """Run :func:`sweep` every ``sweep_interval`` seconds until cancelled (the loop's own lag is
    measured beside it, by :func:`controller.registry.liveness_guard.monitor`)."""
    while True:
        try:
            await sweep(ctx)
        except DatabaseUnavailable as exc:
            log.warning("heartbeat watch: state database unavailable: %s", exc)
        await asyncio.sleep(ctx.settings.sweep_interval)
