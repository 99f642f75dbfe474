"""Active health checks of the CRM web servers, with HAProxy's ``fall``/``rise`` rule.

Every ``health_interval`` seconds the balancer GETs each server's logon page
(``{scheme}://{FQ entry}/{install}/eware.dll/Logon``). Any HTTP answer below 500 is a success
(a logon page, a redirect, even a 404 mean IIS is serving); a 5xx, a refused connection or a
time-out is a failure. A server goes *down* after ``fall`` failures in a row and *up* again after
``rise`` successes in a row. A server nobody has checked yet is taken as up, and its first check
decides at once either way (so a new server that does not answer is dropped after one check,
and a balancer started while a server is down does not send it logons for ``fall`` intervals).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx


class HealthTracker:
    """The fall/rise state machine of one server."""

    __slots__ = ("checked", "failures", "fall", "rise", "successes", "up")

    def __init__(self, *, fall: int, rise: int) -> None:
        self.fall = fall
        self.rise = rise
        self.up = True
        self.checked = False
        self.successes = 0
        self.failures = 0

    def record(self, ok: bool) -> bool | None:
        """Record one check; return the new state (True up, False down) when it changed, else None."""
        if not self.checked:
            self.checked = True
            self.successes, self.failures = (1, 0) if ok else (0, 1)
            if self.up != ok:
                self.up = ok
                return ok
            return None
        if ok:
            self.successes += 1
            self.failures = 0
            if not self.up and self.successes >= self.rise:
                self.up = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.up and self.failures >= self.fall:
                self.up = False
                return False
        return None


class HealthProbe:
    """GETs logon pages. ``transport`` lets tests answer in-process (``httpx.MockTransport``)."""

    def __init__(self, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "crmcluster-balancer-health/1"},
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._timeout = timeout

    async def check(self, url: str) -> bool:
        """True when ``url`` answered below 500 within the time-out."""
        try:
            async with asyncio.timeout(self._timeout * 1.5):
                response = await self._client.get(url)
        except (httpx.HTTPError, OSError, TimeoutError, ValueError):
            return False
        return response.status_code < 500

    async def check_all(self, urls: Mapping[str, str]) -> dict[str, bool]:
        """Check every ``key -> url`` concurrently."""
        keys = list(urls)
        results = await asyncio.gather(*(self.check(urls[k]) for k in keys))
        return dict(zip(keys, results, strict=True))

    async def aclose(self) -> None:
        await self._client.aclose()
