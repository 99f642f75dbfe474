"""Principals (who a request comes from) and the roles they hold.

    Role          may
    viewer        read: the cluster, nodes, jobs, audit, upgrades, checklists, /metrics
    operator      + drain/undrain, metadata refresh, library verify,
                    upgrade pause/resume/approve/accept/resolve/confirm
    admin         everything: registration, configuration, tokens, upgrade plan/start/abort/rollback

An agent's principal holds no role: its node token is good for its own node's heartbeat and
nothing else. The audit trail names a principal by :attr:`Principal.name`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.roles import Role

__all__ = ["Kind", "Principal", "Role"]

Kind = Literal["token", "session", "agent"]


@dataclass(frozen=True)
class Principal:
    """Who sent a request. ``name`` goes into the audit trail; ``node`` is set for an agent."""

    name: str
    role: Role | None
    kind: Kind = "token"
    node: str | None = None

    def may(self, needed: Role) -> bool:
        return self.role is not None and self.role.covers(needed)
