"""The state the controller holds for this node (a :class:`~node_agent.protocol.NodeAssignment`),
as the agent last heard it.

The agent hears it in two ways: every heartbeat's answer, and — while the agent-check is on, so
HAProxy follows a drain within a couple of seconds rather than a heartbeat period —
``GET {controller}/api/v1/agents/{name}/state`` every ``state_poll_interval`` seconds
(:class:`AssignmentPoller`).

The last assignment heard is kept in ``<data dir>/agent/assignment.json``, so an agent restarted
while the controller is away still answers ``maint`` for a node in the middle of an upgrade
instead of putting it back in HAProxy's rotation. With no controller at all (no
``CRMCLUSTER_CONTROLLER_URL``) there is no assignment and the agent answers from its own health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_result, stop_never

from config.backoff import backoff
from config.tls import PeerTrust, trusted
from node_agent.protocol import NodeAssignment

log = logging.getLogger("crmcluster.agent.assignment")

Sleep = Callable[[float], Awaitable[None]]


class AssignmentKeeper:
    """The latest assignment and when it was heard; persisted on every change."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime]) -> None:
        self.path = path
        self._clock = clock
        self.current: NodeAssignment | None = None
        self.heard_at: datetime | None = None
        #: Called with (previous, new) when the assignment changes.
        self.listeners: list[Callable[[NodeAssignment | None, NodeAssignment], None]] = []

    def load(self) -> None:
        try:
            self.current = NodeAssignment.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValidationError, ValueError) as exc:
            log.warning("assignment: %s unreadable (%s); waiting for the controller", self.path, exc)
            return
        log.info("assignment: last heard from the controller: %s", self.current.state)

    def heard(self, body: Any) -> NodeAssignment | None:
        """Take the controller's answer (a heartbeat's, or the state's); None when it is not one."""
        try:
            new = NodeAssignment.model_validate(body)
        except ValidationError:
            log.warning("assignment: the controller's answer is not a node assignment: %.200r", body)
            return None
        self.heard_at = self._clock()
        previous, self.current = self.current, new
        if previous != new:
            if previous is None or previous.state != new.state:
                log.info(
                    "assignment: the controller holds this node %s (was %s)",
                    new.state,
                    previous.state if previous else "unknown",
                )
            self._save(new)
            for listener in self.listeners:
                listener(previous, new)
        return new

    def _save(self, value: NodeAssignment) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(value.model_dump_json())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("assignment: cannot keep it in %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()


class AssignmentPoller:
    """Asks the controller for this node's state every ``interval`` seconds; while it does not
    answer, after twice the interval, doubling up to ``max_backoff``, each wait plus up to one
    interval at random (:func:`config.backoff.backoff`)."""

    def __init__(
        self,
        *,
        controller_url: str,
        name: str,
        token: str,
        keeper: AssignmentKeeper,
        interval: float,
        max_backoff: float,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: float | None = None,
        trust: PeerTrust | None = None,
    ) -> None:
        self.url = f"{controller_url.rstrip('/')}/api/v1/agents/{name}/state"
        self._headers = {"Authorization": f"Bearer {token}"}
        self.keeper = keeper
        self.interval = interval
        self.max_backoff = max_backoff
        self._transport = transport
        self._trust = trust
        self._sleep = sleep
        self.failures = 0
        self._retrying = AsyncRetrying(
            retry=retry_if_result(lambda heard: not heard),
            wait=backoff(first=2 * interval, cap=max_backoff, jitter=interval if jitter is None else jitter),
            stop=stop_never,
            sleep=sleep,
        )

    async def poll_once(self, client: httpx.AsyncClient) -> bool:
        try:
            resp = await client.get(self.url, headers=self._headers)
        except (httpx.HTTPError, OSError) as exc:
            return self._failed(f"unreachable ({type(exc).__name__})")
        if resp.status_code != 200:
            return self._failed(f"answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            return self._failed("answered something that is not JSON")
        if self.keeper.heard(body) is None:
            return self._failed("answered something that is not a node state")
        self.failures = 0
        return True

    def _failed(self, why: str) -> bool:
        self.failures += 1
        if self.failures in (1, 10) or self.failures % 100 == 0:
            log.warning("assignment: the controller %s; keeping %s", why, self._kept())
        return False

    def _kept(self) -> str:
        current = self.keeper.current
        return f"the last state heard ({current.state})" if current else "no state (own health only)"

    async def run(self) -> None:
        verify = await trusted(self._trust, self._sleep, self.interval, "assignment")
        async with httpx.AsyncClient(
            transport=self._transport, timeout=max(2.0, self.interval), verify=verify
        ) as client:
            while True:
                await self._retrying(self.poll_once, client)
                await self._sleep(self.interval)
