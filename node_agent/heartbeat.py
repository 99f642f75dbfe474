"""Heartbeats: the agent pushes its status to the controller
(``POST {controller}/api/v1/agents/{name}/heartbeat``, the agent token, a
:class:`~node_agent.protocol.Heartbeat`) every ``heartbeat_interval`` seconds.

While the controller does not answer, the agent tries again after twice the interval, then
doubling up to ``heartbeat_max_backoff``, each wait plus up to one interval at random
(:func:`config.backoff.backoff`: agents cut off together do not all come back at once); after
the first success it returns to the interval. Without a controller URL there are no heartbeats
and the agent works on alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_never

from config.backoff import backoff
from config.tls import PeerTrust, trusted
from node_agent.protocol import Heartbeat, NodeStatus

log = logging.getLogger("crmcluster.agent.heartbeat")

Sleep = Callable[[float], Awaitable[None]]


class HeartbeatSender:
    def __init__(
        self,
        *,
        controller_url: str,
        name: str,
        token: str,
        status: Callable[[], Awaitable[NodeStatus]],
        agent_url: str | None,
        interval: float,
        max_backoff: float,
        clock: Callable[[], datetime],
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        on_answer: Callable[[object], object] | None = None,
        jitter: float | None = None,
        trust: PeerTrust | None = None,
    ) -> None:
        self._trust = trust
        self.url = f"{controller_url.rstrip('/')}/api/v1/agents/{name}/heartbeat"
        self._token = token
        self._status = status
        self.agent_url = agent_url
        self.interval = interval
        self.max_backoff = max_backoff
        self._clock = clock
        self._transport = transport
        self._sleep = sleep
        self._on_answer = on_answer
        self.failures = 0  # in a row (the back-off)
        self.failed = 0  # since start (the metric)
        self.sent = 0
        self.last_answer: dict[str, object] | None = None
        self._why = ""
        self._retrying = AsyncRetrying(
            retry=retry_if_result(lambda took: not took),
            wait=backoff(first=2 * interval, cap=max_backoff, jitter=interval if jitter is None else jitter),
            stop=stop_never,
            sleep=sleep,
            before_sleep=self._before_retry,
        )

    async def send_once(self, client: httpx.AsyncClient) -> bool:
        """One heartbeat; True when the controller took it."""
        try:
            status = await self._status()
            beat = Heartbeat(status=status, agent_url=self.agent_url, sent_at=self._clock())
            resp = await client.post(
                self.url,
                content=beat.model_dump_json(),
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
            )
        except (httpx.HTTPError, OSError) as exc:
            self._failed(f"unreachable ({type(exc).__name__})")
            return False
        if resp.status_code >= 300:
            self._failed(f"answered {resp.status_code}")
            return False
        if self.failures:
            log.info("heartbeat: the controller answers again after %d failures", self.failures)
        self.failures = 0
        self.sent += 1
        try:
            body = resp.json()
            self.last_answer = body if isinstance(body, dict) else None
        except ValueError:
            self.last_answer = None
        if self.last_answer is not None and self._on_answer is not None:
            self._on_answer(self.last_answer)
        return True

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.failed += 1
        self._why = why

    def _before_retry(self, state: RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action else 0.0
        level = logging.WARNING if self.failures in (1, 5) or self.failures % 50 == 0 else logging.DEBUG
        log.log(level, "heartbeat: controller %s; next try in %.1fs", self._why, wait)

    async def run(self) -> None:
        """Heartbeats until cancelled: each one retried with back-off until the controller takes it."""
        verify = await trusted(self._trust, self._sleep, self.interval, "heartbeat")
        async with httpx.AsyncClient(transport=self._transport, timeout=10.0, verify=verify) as client:
            while True:
                await self._retrying(self.send_once, client)
                await self._sleep(self.interval)
