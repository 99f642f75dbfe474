"""A controller's upgrade orchestrator: built on first use, started under the task supervisor."""

from __future__ import annotations

from typing import Any

from controller.agents.follow import Polling
from controller.context import ControllerContext
from controller.upgrade.lease import LeaderLease
from controller.upgrade.orchestrator import Orchestrator
from controller.upgrade.store import UpgradeStore

_orchestrators: dict[int, Orchestrator] = {}


def orchestrator_for(ctx: ControllerContext, **hooks: Any) -> Orchestrator:
    """The context's orchestrator, built on first use (routes work even before the loop starts).

    ``hooks`` (tests and the benchmark): ``polling``, ``web_transport_for``, ``lease_ttl``,
    ``holder``, ``interval``, ``session_wait``.
    """
    orch = _orchestrators.get(id(ctx))
    if orch is not None and orch.store.engine is ctx.state_engine:
        return orch
    settings = ctx.settings
    ttl = float(hooks.pop("lease_ttl", getattr(settings, "upgrade_lease_ttl", 10.0)))
    holder = hooks.pop("holder", getattr(settings, "controller_id", None))
    store = UpgradeStore(ctx.state_engine, clock=ctx.clock)
    orch = Orchestrator(
        store=store,
        agents=ctx.agents,
        box=ctx.box,
        settings=settings,
        lease=LeaderLease(ctx.state_engine, holder=holder, ttl=ttl, clock=ctx.clock),
        clock=ctx.clock,
        web_transport_for=hooks.pop("web_transport_for", _pool_transports(ctx)),
        polling=hooks.pop(
            "polling", Polling(min_interval=float(getattr(settings, "upgrade_poll_interval", 0.05)))
        ),
        on_step_finished=hooks.pop("on_step_finished", ctx.metrics.step_finished),
        on_alert=hooks.pop("on_alert", ctx.metrics.upgrade_alert_raised),
        **hooks,
    )
    _orchestrators[id(ctx)] = orch
    return orch


def _pool_transports(ctx: ControllerContext) -> Any:
    """The transports the agent pool was given (tests reach stand-in web servers the same way)."""
    return getattr(ctx.agents, "transport_for", None) or getattr(ctx.agents, "_transport_for", None)


def start(ctx: ControllerContext, **hooks: Any) -> Orchestrator:
    """Start the upgrade reconcile loop under the context's task supervisor (called from the lifespan)."""
    orch = orchestrator_for(ctx, **hooks)

    async def loop() -> None:
        try:
            await orch.run_forever()
        except BaseException:
            if _orchestrators.get(id(ctx)) is orch:
                _orchestrators.pop(id(ctx), None)
            raise

    ctx.tasks.start("upgrade-orchestrator", loop, restart=True)
    return orch


__all__ = ["Orchestrator", "orchestrator_for", "start"]
