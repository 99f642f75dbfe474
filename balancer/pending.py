"""Pending logons: users the balancer has sent to a server whose session is not yet in ``Activity``.

Between the 307 and the server writing its ``Activity`` row, the background counts do not know about
the user yet; without pending logons a burst of logons would all go to the same (least-loaded)
server. Each routed logon is therefore counted once here, per server, until one of two things:

- **seen**: a new ``Activity`` row for that server appears (its id is above the last id seen);
  that row now counts the user, so the oldest pending logon of the server is retired — the
  row and the pending logon are never both counted;
- **expired**: ``ttl`` seconds passed (the user never finished logging on).

Retirement and the counts that include the new rows are applied in the same step, without an
``await`` in between, so a decision never sees both or neither.

While the CRM database cannot be read (degraded mode), pending logons are not expired: the
balancer's own decisions are then the only fresh information it has, and the first successful
refresh both retires the logons that became rows and expires the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class PendingLogons:
    """Per-server FIFO of expiry times (monotonic seconds). Server keys are lower-cased names."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._queues: dict[str, deque[float]] = {}

    def queue(self, server: str) -> deque[float]:
        """The FIFO of ``server`` (created empty), which its :class:`~balancer.selection.Slot` holds
        so the hot path counts and adds without a look-up."""
        queue = self._queues.get(server)
        if queue is None:
            queue = self._queues[server] = deque()
        return queue

    def add(self, queue: deque[float], *, now: float) -> None:
        """Count one routed logon in ``queue`` (a server's, from :meth:`queue`)."""
        queue.append(now + self.ttl)

    def counts(self) -> dict[str, int]:
        """Pending logons per server, servers with none left out."""
        return {name: len(q) for name, q in self._queues.items() if q}

    def seen(self, server: str, rows: int = 1) -> int:
        """``rows`` new Activity rows appeared for ``server``: retire that many (oldest first).

        Returns how many pending logons were retired (rows of users who did not come through
        this balancer find nothing to retire).
        """
        queue = self._queues.get(server)
        retired = 0
        while queue and retired < rows:
            queue.popleft()
            retired += 1
        return retired

    def expire(self, *, now: float) -> int:
        """Drop pending logons whose time is up; return how many."""
        dropped = 0
        for queue in self._queues.values():
            while queue and queue[0] <= now:
                queue.popleft()
                dropped += 1
        return dropped

    def keep_only(self, servers: Iterable[str]) -> None:
        """Forget servers that left the configuration."""
        keep = set(servers)
        for name in [n for n in self._queues if n not in keep]:
            del self._queues[name]
