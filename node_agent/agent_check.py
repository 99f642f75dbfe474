"""HAProxy's agent-check: a TCP port on which the agent answers one line per connection, telling
HAProxy what to do with this web server (``agent-check agent-port N`` on the server line;
deploy/haproxy/agent-check.cfg).

The line comes from the state the controller holds for the node (:mod:`node_agent.assignment`)
and the agent's own view of IIS (:meth:`HostDriver.status`, looked at most once a second):

    controller's state          IIS running   answer           HAProxy
    maintenance / upgrading     -             maint            MAINT
    draining                    yes           up drain         DRAIN
    draining                    no            down drain       DOWN
    anything else (up, down,    yes           up ready N%      UP, weight N% of the configured one
      or never heard)           no            down ready       DOWN

HAProxy changes only what an answer names, and only the agent can undo what the agent did, so
every answer names both the operational state (up/down) and the administrative one
(ready/drain/maint). IIS running wins over the controller's ``down``: that word only means the
controller has not heard from the agent lately, and the agent knows better.

**Weight.** N is the controller's weight for the node (0..1, normally 1) in percent, ramped up
linearly over ``slow_start`` seconds after the server comes back into rotation (an answer other
than ``up ready`` followed by ``up ready``), as the balancer's slow start and HAProxy's own
``slowstart`` do — so the configuration must not set HAProxy's too. An agent that has just
started does not ramp: the server may have been serving all along.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from config.vocabulary import NodeState
from node_agent.assignment import AssignmentKeeper
from node_agent.protocol import NodeStatus, ServiceStatus

log = logging.getLogger("crmcluster.agent.agent_check")

#: The least weight of a server in slow start, so it always takes some share.
MIN_PERCENT = 1
_HELD_OUT = frozenset({NodeState.MAINTENANCE, NodeState.UPGRADING})


def reply(*, state: NodeState | None, web_running: bool, weight_percent: int) -> str:
    """The agent-check line (without its newline) for the controller's ``state`` and IIS."""
    if state in _HELD_OUT:
        return "maint"
    admin = "drain" if state == NodeState.DRAINING else "ready"
    if not web_running:
        return f"down {admin}"
    if admin == "drain":
        return "up drain"
    return f"up ready {weight_percent}%"


class WebHealth:
    """Is IIS running, from the driver's status, looked at no more than every ``ttl`` seconds.
    A status that fails or takes longer than ``timeout`` keeps the previous answer (down if none)."""

    def __init__(
        self,
        status: Callable[[], Awaitable[NodeStatus]],
        *,
        ttl: float = 1.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status = status
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock
        self._lock = asyncio.Lock()
        self._value: bool | None = None
        self._at: float | None = None

    async def web_running(self) -> bool:
        async with self._lock:
            now = self._clock()
            if self._at is None or now - self._at >= self.ttl:
                try:
                    status = await asyncio.wait_for(self._status(), self.timeout)
                except Exception as exc:  # noqa: BLE001 - whatever the driver raises, keep the last answer
                    log.warning("agent-check: cannot read this server's status: %s", exc)
                else:
                    self._value = status.web == ServiceStatus.RUNNING
                self._at = now
            return bool(self._value)


class AgentCheck:
    """Decides the answer: :func:`reply` plus the slow-start ramp (see the module docstring)."""

    def __init__(
        self,
        *,
        keeper: AssignmentKeeper,
        health: WebHealth,
        slow_start: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keeper = keeper
        self.health = health
        self.slow_start = slow_start
        self._clock = clock
        self._in_rotation: bool | None = None  # None: no answer given yet by this process
        self._ramp_start: float | None = None
        self.last_answer: str | None = None
        #: Answers given, by their operational or administrative word (up, drain, maint, down).
        self.answers: dict[str, int] = {}

    def _weight_percent(self, in_rotation: bool) -> int:
        now = self._clock()
        if not in_rotation:
            self._ramp_start = None
        elif self._in_rotation is False and self.slow_start > 0:
            self._ramp_start = now
        self._in_rotation = in_rotation
        current = self.keeper.current
        weight = current.weight if current is not None else 1.0
        if self._ramp_start is not None:
            ramp = (now - self._ramp_start) / self.slow_start
            if ramp >= 1:
                self._ramp_start = None
            else:
                weight = min(weight, max(ramp, MIN_PERCENT / 100))
        if weight <= 0:
            return 0
        return max(MIN_PERCENT, round(100 * weight))

    async def answer(self) -> str:
        current = self.keeper.current
        state = current.state if current is not None else None
        web = await self.health.web_running()
        in_rotation = reply(state=state, web_running=web, weight_percent=100).startswith("up ready")
        line = reply(state=state, web_running=web, weight_percent=self._weight_percent(in_rotation))
        if line.split(" ", 2)[:2] != (self.last_answer or "").split(" ", 2)[:2]:
            log.info("agent-check: answering %r (controller: %s, IIS running: %s)", line, state, web)
        self.last_answer = line
        first = line.split(" ", 1)[0]
        word = "drain" if first == "up" and "drain" in line else first
        self.answers[word] = self.answers.get(word, 0) + 1
        return line


class AgentCheckServer:
    """The TCP listener. ``port`` 0 takes a free port (:attr:`port` tells which, once started)."""

    def __init__(self, check: AgentCheck, *, host: str, port: int, write_timeout: float = 5.0) -> None:
        self.check = check
        self.host = host
        self.requested_port = port
        self.write_timeout = write_timeout
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.requested_port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("agent-check: listening on %s:%d for HAProxy", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # HAProxy may send an `agent-send` string first; the answer does not depend on it.
        try:
            line = await self.check.answer()
            writer.write(line.encode("ascii") + b"\n")
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except (OSError, TimeoutError) as exc:
            log.debug("agent-check: connection ended early: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self.write_timeout)
