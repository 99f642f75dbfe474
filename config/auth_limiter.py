"""Failed authentications counted per client address, so guessing tokens is slow and seen.

An address that fails ``max_failures`` times within ``window`` seconds is refused (429 with
``Retry-After``) for ``block`` seconds, whatever it sends meanwhile — a right token included, so
the answers tell a guesser nothing while it is blocked. Memory is bounded: at most ``max_clients``
addresses are remembered (the least recently seen is forgotten first), each with at most
``max_failures`` timestamps.

    limiter = FailedAuthLimiter(max_failures=10, window=60, block=60)
    limiter.blocked_for("10.0.0.9")      # None, or seconds left
    limiter.failed("10.0.0.9")           # None, or seconds of the block that starts now

Behind a reverse proxy every client shares the proxy's address; docs/security.md says so.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Client:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class FailedAuthLimiter:
    def __init__(
        self,
        *,
        max_failures: int = 10,
        window: float = 60.0,
        block: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def blocked_for(self, client: str) -> float | None:
        """Seconds ``client`` stays blocked, or None when it may try."""
        entry = self._clients.get(client)
        if entry is None:
            return None
        left = entry.blocked_until - self._clock()
        return left if left > 0 else None

    def failed(self, client: str) -> float | None:
        """Count one failure; return the block's length when this failure starts one."""
        now = self._clock()
        entry = self._clients.get(client)
        if entry is None:
            entry = self._clients[client] = _Client(failures=deque(maxlen=self.max_failures))
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        while entry.failures and now - entry.failures[0] > self.window:
            entry.failures.popleft()
        entry.failures.append(now)
        if len(entry.failures) >= self.max_failures and entry.blocked_until <= now:
            entry.blocked_until = now + self.block
            entry.failures.clear()
            return self.block
        return None
