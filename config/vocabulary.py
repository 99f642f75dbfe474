"""The words every service shares: versions, node states and roles (DESIGN.md "Vocabulary")."""

from __future__ import annotations

from enum import StrEnum

#: CRM versions are compared exactly as strings.
KNOWN_VERSIONS: tuple[str, ...] = ("7.2", "7.3", "2017 R1")


class NodeState(StrEnum):
    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    MAINTENANCE = "maintenance"
    UPGRADING = "upgrading"


class Role(StrEnum):
    DATABASE = "database"
    REPLICATION_ENGINE = "replication_engine"
    DTLS = "dtls"
    INDEXER = "indexer"
    ESCALATION = "escalation"
    EMAIL_MANAGER = "email_manager"


#: Roles that must be held by exactly one node of a cluster.
SINGLE_ROLES: tuple[Role, ...] = tuple(Role)

#: CRM services the guide says are installed once in a cluster.
CRM_SERVICES: tuple[str, ...] = ("indexer", "escalation", "email_manager")
