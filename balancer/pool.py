"""The server pool: everything the balancer knows about the configured servers, in memory.

The background loops (:mod:`balancer.refresh`) feed it — configuration from ``Custom_SysParams``,
counts from ``Activity``, node states from the state database, health check results — and the
logon hot path asks it for a :class:`Decision` without touching a database. All methods are
synchronous: each update is applied whole between two decisions (asyncio runs one at a time).

Slow start (see :mod:`balancer.selection`) begins when a server becomes routable again after the
pool is ready — its checks rise, or the controller sets it back ``up`` — and when a server is
added to ``ServerNames``, provided another server is taking logons at that moment (with no peer
there is no storm to spread: a lone server takes every logon anyway). The servers found at
start-up do not ramp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from balancer.activity import ActivitySnapshot
from balancer.health import HealthTracker
from balancer.pending import PendingLogons
from balancer.selection import Decision, Slot, least_loaded
from config.sysparams import ClusterConfig

__all__ = ["Decision", "NodeRow", "ServerPool"]


@dataclass(frozen=True)
class NodeRow:
    state: str
    weight: float


class ServerPool:
    def __init__(
        self,
        *,
        install: str,
        scheme: str,
        pending_ttl: float,
        slow_start: float,
        fall: int,
        rise: int,
    ) -> None:
        self.install = install
        self.scheme = scheme
        self.slow_start = slow_start
        self.fall, self.rise = fall, rise
        self.pending = PendingLogons(pending_ttl)
        self.config: ClusterConfig | None = None
        self.slots: tuple[Slot, ...] = ()
        #: The slots that take logons now, in ServerNames order; rebuilt on every change.
        self.routable: tuple[Slot, ...] = ()
        self.by_key: dict[str, Slot] = {}
        self.health: dict[str, HealthTracker] = {}
        self.node_rows: dict[str, NodeRow] = {}
        self.sessions: dict[str, str] = {}
        self.peer_pending: dict[str, int] = {}
        self.last_activity_id: int | None = None
        self.config_loaded = False
        self.counts_loaded = False
        self.crm_stale = False
        self.state_stale = False

    # State ---------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """The first configuration and counts are loaded (``/healthz`` answers 200)."""
        return self.config_loaded and self.counts_loaded

    @property
    def stale(self) -> bool:
        return self.crm_stale or self.state_stale

    def location_for(self, fqdn: str, scheme: str | None = None) -> bytes:
        return f"{scheme or self.scheme}://{fqdn}/{self.install}/eware.dll/Logon".encode("ascii")

    # Updates from the background loops -------------------------------------------------------------
    def apply_config(self, cfg: ClusterConfig, *, now: float) -> list[str]:
        """Use ``cfg``; return the keys of servers it adds (to be checked at once)."""
        if self.config_loaded and cfg == self.config:
            return []
        old = self.by_key
        had_peers = bool(self.routable)
        slots: list[Slot] = []
        added: list[str] = []
        for i, name in enumerate(cfg.server_names):
            key = name.lower()
            fqdn = cfg.fq_for(name)
            prev = old.get(key)
            # The cluster's HTTPS switch (crmcluster_UseHTTPS, HTTPPort) wins over the setting:
            # redirects follow it from the next configuration read, without a restart.
            location = self.location_for(cfg.web_address(name), cfg.scheme)
            slot = Slot(name=name, key=key, index=i, fqdn=fqdn, location=location)
            slot.pending = self.pending.queue(key)
            slot.peer_pending = self.peer_pending.get(key, 0)
            if prev is not None:
                slot.health_up = prev.health_up
                slot.logged_on = prev.logged_on
                slot.ramp_start = prev.ramp_start
            else:
                self.health[key] = HealthTracker(fall=self.fall, rise=self.rise)
                if self.config_loaded:
                    added.append(key)
                    if had_peers and self.slow_start > 0:
                        slot.ramp_start = now
            row = self.node_rows.get(key)
            if row is not None:
                slot.node_state, slot.node_weight = row.state, row.weight
            slots.append(slot)
        self.slots = tuple(slots)
        self.by_key = {s.key: s for s in slots}
        for key in [k for k in self.health if k not in self.by_key]:
            del self.health[key]
        self.pending.keep_only(self.by_key)
        self.config = cfg
        self.config_loaded = True
        self._update_routable()
        return added

    def _update_routable(self) -> None:
        self.routable = tuple(s for s in self.slots if s.routable)

    def apply_node_states(self, rows: Mapping[str, NodeRow], *, now: float) -> None:
        """The controller's node rows (keys lower-cased); servers without a row: own checks only."""
        self.node_rows = dict(rows)
        for slot in self.slots:
            was = slot.routable
            row = rows.get(slot.key)
            slot.node_state, slot.node_weight = (row.state, row.weight) if row else (None, 1.0)
            self._ramp_if_back(slot, was, now)
        self._update_routable()

    def apply_health(self, key: str, ok: bool, *, now: float) -> bool | None:
        """Record a health check; return the new health state when it changed."""
        tracker, slot = self.health.get(key), self.by_key.get(key)
        if tracker is None or slot is None:
            return None
        changed = tracker.record(ok)
        if changed is not None:
            was = slot.routable
            slot.health_up = changed
            self._ramp_if_back(slot, was, now)
            self._update_routable()
        return changed

    def apply_counts(self, snap: ActivitySnapshot, *, now: float) -> None:
        """A fresh Activity snapshot: counts replaced, pending logons that became rows retired."""
        for key, n in snap.new_rows.items():
            self.pending.seen(key, n)
        self.pending.expire(now=now)
        for slot in self.slots:
            slot.logged_on = snap.logged_on.get(slot.key, 0)
        if snap.sessions is not None:
            self.sessions = snap.sessions
        self.sessions.update(snap.new_sessions)
        self.last_activity_id = snap.last_id
        self.counts_loaded = True

    def apply_peer_pending(self, peers: Mapping[str, int]) -> None:
        """The other balancer replicas' pending logons per server key."""
        self.peer_pending = dict(peers)
        for slot in self.slots:
            slot.peer_pending = peers.get(slot.key, 0)

    def _ramp_if_back(self, slot: Slot, was_routable: bool, now: float) -> None:
        if self.ready and not was_routable and slot.routable and self.slow_start > 0:
            if any(s.routable for s in self.slots if s is not slot):
                slot.ramp_start = now

    # The hot path ------------------------------------------------------------------------------------
    def decide(self, user_logon: str | None, *, now: float, count_pending: bool = True) -> Decision | None:
        """Choose the server for one logon (and count it as pending), or None when none is available."""
        cfg = self.config
        routable = self.routable
        if cfg is None or not routable:
            return None
        if cfg.do_load_balancing:
            return routable[0].as_first_available
        decision: Decision | None = None
        if user_logon:
            key = self.sessions.get(user_logon.strip().lower())
            sticky = self.by_key.get(key) if key else None
            if sticky is not None and sticky.routable:
                decision = sticky.as_sticky
        if decision is None:
            slot = least_loaded(routable, now=now, slow_start=self.slow_start)
            if slot is None:
                return None
            decision = slot.as_least_loaded
        if count_pending:
            self.pending.add(decision.slot.pending, now=now)
        return decision

    # Views ---------------------------------------------------------------------------------------------
    def health_urls(self) -> dict[str, str]:
        return {s.key: s.location.decode("ascii") for s in self.slots}

    def servers_view(self, *, now: float) -> list[dict[str, Any]]:
        return [
            {
                "name": s.name,
                "fqdn": s.fqdn,
                "state": s.state,
                "weight": round(s.weight(now=now, slow_start=self.slow_start), 3),
                "logged_on": s.logged_on,
                "pending": len(s.pending) + s.peer_pending,
            }
            for s in self.slots
        ]
