"""Pending logons shared by balancer replicas, through the state database.

Balancers are stateless replicas behind one name (DNS round robin or a layer-4 load balancer).
Each one knows only the logons *it* routed and that ``Activity`` does not show yet; without
sharing, two replicas would both send the next users to the same emptiest server. So each
replica, on every states pass (``states_interval``, 0.5 s):

1. publishes its own pending count per server into ``balancer_pending`` (one row per server,
   keyed by its replica id) when the counts changed, or at least every ``peer_ttl / 3`` seconds
   so its rows stay fresh;
2. reads the other replicas' rows updated within ``peer_ttl`` seconds (older rows belong to a
   replica that stopped) and adds them to each server's load as ``peer_pending``.

A peer's pending logon is retired by that peer when its ``Activity`` row appears, and the next
publication says so; between the two, for at most about one states pass plus one counts pass,
this replica counts that user both as a row and as the peer's pending logon. This is the only
place a logon can be counted twice, it is bounded by a second, and it errs toward spreading
logons. Nothing is written on the logon path: publication rides on the background pass.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from config.state_schema import balancer_pending

#: Rows of replicas silent for this long are deleted by whichever replica notices.
FORGET_AFTER = timedelta(minutes=10)


def default_replica_id() -> str:
    """``host:pid``: unique among replicas running at the same time."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}"


class ReplicaExchange:
    def __init__(self, *, replica_id: str, peer_ttl: float) -> None:
        self.replica_id = replica_id
        self.peer_ttl = timedelta(seconds=peer_ttl)
        self._published: dict[str, int] | None = None
        self._published_at: datetime | None = None

    def _due(self, counts: dict[str, int], now: datetime) -> bool:
        if counts != self._published or self._published_at is None:
            return True
        if not counts:
            return False  # no rows of ours to keep fresh: write nothing (the database may be shared)
        return now - self._published_at >= self.peer_ttl / 3

    async def exchange(self, conn: AsyncConnection, *, own: dict[str, int], now: datetime) -> dict[str, int]:
        """Publish ``own`` pending counts (server key -> n); return the peers' sums per server.

        Runs in the caller's transaction; ``now`` is naive UTC (:func:`config.state_schema.utcnow`).
        """
        t = balancer_pending
        if self._due(own, now):
            await conn.execute(delete(t).where(t.c.replica == self.replica_id))
            if own:
                await conn.execute(
                    insert(t),
                    [
                        {"replica": self.replica_id, "server": k, "pending": n, "updated_at": now}
                        for k, n in own.items()
                    ],
                )
            self._published, self._published_at = dict(own), now
            await conn.execute(delete(t).where(t.c.updated_at < now - FORGET_AFTER))
        rows = await conn.execute(
            select(t.c.server, t.c.pending).where(
                t.c.replica != self.replica_id, t.c.updated_at >= now - self.peer_ttl
            )
        )
        peers: dict[str, int] = {}
        for server, n in rows:
            key = str(server).lower()
            peers[key] = peers.get(key, 0) + max(int(n), 0)
        return peers

    def forget_publication(self) -> None:
        """After a failed write: publish again on the next pass."""
        self._published = None
