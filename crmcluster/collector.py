"""The garbage collector of a long-lived service, tamed for the hot path.

CPython frees almost everything by reference counting; the cyclic collector only finds cycles.
It runs by allocation counts, and a *full* collection walks every tracked object the process
holds: after start-up that is FastAPI's and pydantic's models, SQLAlchemy's metadata and
compiled statements, Alembic's environment — hundreds of thousands of objects that live as long
as the process and are never garbage (about 120,000 in the balancer). A full collection of them
takes 0.1-0.2 s on the development machine; left at the defaults (700, 10, 10) the balancer
under wrk at 128 connections ran several a minute (issue 16 counted 7-9 in 11 s, up to 115 ms
each): every one a pause of every request in flight, and the whole of the p99.

So, once the service has started (its lifespan ran: engines, schema, first reads):

1. ``gc.collect()`` then ``gc.freeze()``: what start-up built moves to the permanent generation,
   which no later collection walks (CPython's documented use of ``freeze``: "disable gc early,
   freeze after start-up"; Instagram's production setting);
2. thresholds for a server whose requests allocate short-lived objects: the youngest
   generation is collected every :data:`GEN0` net allocations instead of 700 (a young
   collection costs what survives, not what was allocated, so fewer and larger ones cost less
   in all), and the older generations keep CPython's ratios.

The collector stays enabled: cycles made after start-up (a failed task's traceback, a dropped
connection) are still found. :func:`collector_stats` reports what it did, for benchmarks.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("crmcluster")

#: Net container allocations between two collections of the youngest generation.
GEN0 = 50_000
#: Young collections between two of the middle generation; middle between two full ones.
GEN1 = 10
GEN2 = 10


def tame_after_startup() -> None:
    """Freeze what start-up built and set the thresholds of a long-lived server (idempotent)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
    log.debug("gc: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())


def collector_stats() -> dict[str, int]:
    """Collections per generation so far and the objects frozen (for ``/metrics`` or a bench)."""
    stats = gc.get_stats()
    return {
        "gen0_collections": stats[0]["collections"],
        "gen1_collections": stats[1]["collections"],
        "gen2_collections": stats[2]["collections"],
        "frozen": gc.get_freeze_count(),
    }
