"""Never down because the controller is behind.

A silent agent is evidence about the server only if the controller was able to hear it: when the
controller's own event loop or its state database lags, heartbeats wait in its queues, and marking
their servers ``down`` would take healthy servers out of the balancer because of the controller.
So :class:`LivenessGuard` holds two kinds of "down for silence" decisions back, and reports them:

- **the controller is behind.** Every lateness the controller measures of itself — the heartbeat
  watch waking later than it asked, a state-database statement taking longer than it should — above
  ``liveness_lag_limit`` seconds opens a window of ``heartbeat_timeout`` seconds in which no server
  goes down for silence. Afterwards a server still silent has had a whole time-out of a controller
  keeping up to be heard, and goes down as usual.
- **a storm.** More than ``down_storm_share`` of the cluster (and at least two servers) falling
  silent at the same pass is more likely the controller's network than the servers: the decisions
  are held while it lasts, with a cluster warning (``down_storm_held``), a log line and a metric —
  as Kubernetes' node lifecycle controller stops evicting in a disrupted zone.

Evidence about a server itself is never held: a heartbeat that reports IIS stopped makes the server
``down`` at once (:meth:`~controller.registry.nodes.NodeRegistry.observe`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decision:
    """What one pass of the heartbeat watch may do with the servers that fell silent."""

    down: list[str]
    held: list[str]
    #: ``None`` when nothing is held; else ``"controller_behind"`` or ``"down_storm"``.
    reason: str | None = None


@dataclass
class LivenessGuard:
    #: Seconds of lateness of the controller's own loop or database that count as "behind".
    lag_limit: float
    #: Seconds decisions stay held after the controller was last behind (the heartbeat time-out).
    window: float
    #: Share of the cluster above which silent servers at one pass are a storm (held).
    storm_share: float
    monotonic: Callable[[], float] = time.monotonic
    #: The largest lateness measured since the last pass, and the last pass's, for the metrics.
    last_lag: float = 0.0
    worst_lag: float = 0.0
    behind_until: float = -math.inf
    #: What the last pass held, and why (the cluster warning reads it).
    held: list[str] = field(default_factory=list)
    held_reason: str | None = None
    #: When :func:`monitor` last woke (``None`` until it runs): a monitor that has not woken for
    #: longer than ``lag_limit`` is itself evidence that the loop is behind, measured or not yet.
    last_tick: float | None = None
    tick_interval: float = 0.1

    def note_lag(self, seconds: float) -> None:
        """Record a lateness the controller measured of itself (loop wake-up, database statement)."""
        self.last_lag = max(seconds, 0.0)
        self.worst_lag = max(self.worst_lag, self.last_lag)
        if seconds > self.lag_limit:
            self.behind_until = max(self.behind_until, self.monotonic() + self.window)

    def behind(self) -> bool:
        now = self.monotonic()
        starved = self.last_tick is not None and now - self.last_tick > self.lag_limit + self.tick_interval
        return starved or now < self.behind_until

    def decide(self, silent: Sequence[str], *, cluster_size: int) -> Decision:
        """Which of the ``silent`` servers may go down now; the rest are held (and remembered)."""
        names = list(silent)
        reason: str | None = None
        if names and self.behind():
            reason = "controller_behind"
        elif len(names) >= 2 and len(names) > self.storm_share * max(cluster_size, 1):
            reason = "down_storm"
        decision = Decision(down=[] if reason else names, held=names if reason else [], reason=reason)
        self.held, self.held_reason = decision.held, decision.reason
        return decision


async def monitor(guard: LivenessGuard) -> None:
    """Measure the event loop's lag until cancelled: sleep ``tick_interval``, note how much later
    than asked the loop woke us. Slow steps of other tasks (a sweep's statements, a long request)
    show here even when those tasks cannot measure themselves."""
    while True:
        asked = guard.monotonic() + guard.tick_interval
        guard.last_tick = guard.monotonic()
        await asyncio.sleep(guard.tick_interval)
        guard.note_lag(guard.monotonic() - asked)
