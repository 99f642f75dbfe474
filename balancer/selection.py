"""Choosing the server for a logon: the guide's "fewest logged-on users", with slow start.

Every available server is scanned (clusters are a handful of servers; no sampling). A server's
*load* is its logged-on users (``Activity``) plus its pending logons (this replica's and, see
:mod:`balancer.replicas`, the other replicas'); its *score* is

    score = (load + 1) / weight

and the lowest score wins; on equal scores the earlier server in ``ServerNames`` wins. With every
weight at 1 (the normal case) this is exactly the guide's rule, and three servers with four
users logging on in turn get servers 1, 2, 3, 1.

**Slow start.** A server that comes back (its health checks rise again, or the controller sets it
``up`` again) or that is newly added to ``ServerNames`` starts with a small weight that grows
linearly to 1 over ``slow_start`` seconds (HAProxy's ``slowstart``). Since the score divides by
the weight, such a server takes a logon only while ``load + 1 <= weight x (others' load + 1)``:
it is filled up to its share gradually instead of taking every logon of a storm because it is
empty. The controller's ``nodes.weight`` (0..1) caps the weight the same way, so the controller
can hold a server in slow start for as long as it likes. Weights never go below
:data:`MIN_WEIGHT`: a lone available server is always chosen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: The floor of a server's weight, so a server in slow start is never divided by zero and a lone
#: server always takes logons.
MIN_WEIGHT = 0.01

#: Node states (from the state DB) that let a server take logons. ``None``: no row, own checks only.
ROUTABLE_STATES = frozenset({"up", None})


class Decision(NamedTuple):
    slot: Slot
    reason: str  # least_loaded | sticky | first_available


@dataclass(slots=True, eq=False)
class Slot:
    r"""One configured server as the hot path sees it.

    The hot path allocates nothing it can build once: the three possible :class:`Decision`\ s for
    this server and the ASGI ``http.response.start`` message of its 307 without a query string
    (uvicorn copies the headers it is given; nothing mutates them) are made here.
    """

    name: str
    key: str  # lower-cased name, how Activity rows and node rows are matched
    index: int
    fqdn: str
    location: bytes  # the full Location header value, without the query string
    node_state: str | None = None
    node_weight: float = 1.0
    health_up: bool = True
    logged_on: int = 0
    ramp_start: float | None = None  # monotonic time the slow start began; None: not ramping
    pending: deque[float] = field(default_factory=deque)  # shared with PendingLogons
    peer_pending: int = 0  # other balancer replicas' pending logons (balancer.replicas)
    name_header: bytes = field(default=b"")
    as_least_loaded: Decision = field(init=False)
    as_sticky: Decision = field(init=False)
    as_first_available: Decision = field(init=False)
    redirect_start: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.name_header = self.name.encode("ascii")
        self.as_least_loaded = Decision(self, "least_loaded")
        self.as_sticky = Decision(self, "sticky")
        self.as_first_available = Decision(self, "first_available")
        self.redirect_start = self.redirect_message(self.location)

    def redirect_message(self, location: bytes) -> dict[str, Any]:
        """The ``http.response.start`` of a 307 to ``location`` (this server's, plus a query)."""
        return {
            "type": "http.response.start",
            "status": 307,
            "headers": [
                (b"location", location),
                (b"x-crm-server", self.name_header),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
            ],
        }

    @property
    def routable(self) -> bool:
        return self.health_up and self.node_state in ROUTABLE_STATES

    @property
    def state(self) -> str:
        """The state shown in ``/api/v1/servers``: the controller's word, else our checks'."""
        if self.node_state is not None and self.node_state != "up":
            return self.node_state
        return "up" if self.health_up else "down"

    def weight(self, *, now: float, slow_start: float) -> float:
        """The weight this server has now: the slow-start ramp capped by the controller's weight."""
        w = min(self.node_weight, 1.0)
        if self.ramp_start is not None:
            if slow_start <= 0 or now - self.ramp_start >= slow_start:
                self.ramp_start = None
            else:
                w = min(w, (now - self.ramp_start) / slow_start)
        return max(w, MIN_WEIGHT)


def least_loaded(routable: Sequence[Slot], *, now: float, slow_start: float) -> Slot | None:
    """The slot of ``routable`` with the lowest score (ties: the earlier one), or None."""
    best: Slot | None = None
    best_score: float = 0.0
    for slot in routable:
        score: float = slot.logged_on + len(slot.pending) + slot.peer_pending + 1
        if slot.ramp_start is not None or slot.node_weight < 1.0:
            score /= slot.weight(now=now, slow_start=slow_start)
        if best is None or score < best_score:
            best, best_score = slot, score
    return best


def first_available(routable: Sequence[Slot]) -> Slot:
    """With ``DoLoadBalancing`` true Sage balances by itself: the first routable server."""
    return routable[0]
