"""The controller leader lease: a row of ``leases`` taken by compare-and-set, with an expiry.

Controllers run active/passive (DESIGN.md "Scale-out"): only the holder of the ``controller``
lease runs upgrades; the others serve reads. The database is the arbiter — no home-made consensus:

- *take*: ``UPDATE leases SET holder=me, expires_at=now+ttl, generation=generation+1 WHERE
  name='controller' AND (holder=me OR expires_at < now)``; when no row exists yet, ``INSERT`` it
  (a concurrent insert loses on the primary key and simply is not the leader);
- *renew*: the same statement, every ``ttl/3``; a leader that cannot renew before its expiry stops
  driving runs (its executors are cancelled and their steps stay ``running`` for the next leader,
  which follows them by op id).

``generation`` grows with every take or renewal, so a stale leader can be told from a live one.

    lease = LeaderLease(engine, holder="ctl-a", ttl=10)
    if await lease.acquire():
        ...  # lead until lease.held is False
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from config.state_schema import leases, utcnow

LEADER = "controller"


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaderLease:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        holder: str | None = None,
        ttl: float = 10.0,
        name: str = LEADER,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.holder = holder or default_holder()
        self.ttl = ttl
        self.name = name
        self.clock = clock
        self.generation = 0
        self._expires: datetime | None = None

    @property
    def held(self) -> bool:
        """True while this process holds an unexpired lease (by its own clock)."""
        return self._expires is not None and self.clock() < self._expires

    async def acquire(self) -> bool:
        """Take or renew the lease; True when this process is the leader until ``now + ttl``."""
        now = self.clock()
        expires = now + timedelta(seconds=self.ttl)
        try:
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    update(leases)
                    .where(leases.c.name == self.name)
                    .where(or_(leases.c.holder == self.holder, leases.c.expires_at < now))
                    .values(holder=self.holder, expires_at=expires, generation=leases.c.generation + 1)
                )
                if res.rowcount == 0:
                    exists = (
                        await conn.execute(select(leases.c.name).where(leases.c.name == self.name))
                    ).first()
                    if exists is not None:
                        self._expires = None
                        return False
                    await conn.execute(
                        insert(leases).values(
                            name=self.name, holder=self.holder, expires_at=expires, generation=1
                        )
                    )
                gen = (
                    await conn.execute(select(leases.c.generation).where(leases.c.name == self.name))
                ).scalar_one()
        except IntegrityError:
            self._expires = None
            return False
        self.generation = int(gen)
        self._expires = expires
        return True

    async def release(self) -> None:
        """Give the lease up (at shutdown) so another controller need not wait for the expiry."""
        if self._expires is None:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(leases)
                .where(leases.c.name == self.name)
                .where(leases.c.holder == self.holder)
                .values(expires_at=self.clock() - timedelta(seconds=1))
            )
        self._expires = None

    async def current(self) -> tuple[str, datetime] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(leases.c.holder, leases.c.expires_at).where(leases.c.name == self.name)
                )
            ).first()
        return (row[0], row[1]) if row is not None else None
