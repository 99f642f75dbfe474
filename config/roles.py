"""The roles an API token holds (shared by the controller and the balancer, which both read the
state database's ``api_tokens``).

    Role          may
    viewer        read: the cluster, nodes, jobs, audit, upgrades, checklists, /metrics
    operator      + drain/undrain, metadata refresh, library verify,
                    upgrade pause/resume/approve/accept/resolve/confirm
    admin         everything: registration, configuration, tokens, upgrade plan/start/abort/rollback
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def covers(self, needed: Role) -> bool:
        """True when this role may do what ``needed`` may."""
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
