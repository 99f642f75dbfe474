"""The invariants of a multi-server Sage CRM cluster, checked afresh on every look.

Each violated invariant is one :class:`ClusterWarning` (``code``, ``message``, ``nodes``):

- ``database_count``            exactly one node holds the database (the install that created it)
- ``replication_engine_count``  exactly one Replication Engine in the cluster (the guide: "only one
                                single Replication Engine instance"), as the agents report it
- ``replication_engine_fenced`` the Replication Engine sits on a fenced node
- ``service_count``             Indexer, Escalation and Email Manager each installed on exactly one node
- ``version_mismatch``          every node on the same CRM version
- ``server_names_mismatch``     ServerNames lists exactly the registered nodes
- ``fq_server_names_mismatch``  each FQServerNames entry is its node's registered fqdn
- ``dtls_server_name``          DTLSServerName is set and names a registered node
- ``agent_url_mismatch``        a node's heartbeats advertise another agent URL than its registered
                                one (:func:`agent_url_warnings`; the registered one is kept)

A node's observations come from its last heartbeat (or status), so a second Replication Engine
installed by hand shows up with the next heartbeat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from config.sysparams import ClusterConfig
from config.vocabulary import CRM_SERVICES
from controller.registry.nodes import NodeRecord

SERVICE_LABELS = {"indexer": "Indexer", "escalation": "Escalation", "email_manager": "Email Manager"}


class ClusterWarning(BaseModel):
    code: str
    message: str
    nodes: list[str] = []


def _names(items: Sequence[NodeRecord]) -> list[str]:
    return [n.name for n in items]


def check(nodes: Sequence[NodeRecord], config: ClusterConfig) -> list[ClusterWarning]:
    """Every violated invariant of ``nodes`` and ``config``, in a stable order."""
    out: list[ClusterWarning] = []
    if not nodes:
        return [ClusterWarning(code="no_nodes", message="no web servers are registered")]

    dbs = [n for n in nodes if n.is_database]
    if len(dbs) != 1:
        out.append(
            ClusterWarning(
                code="database_count",
                message=f"exactly one node must hold the CRM database; found {len(dbs)}",
                nodes=_names(dbs),
            )
        )

    re_nodes = [n for n in nodes if n.has_replication_engine]
    live_re = [n for n in re_nodes if not n.fenced]
    if len(live_re) != 1:
        out.append(
            ClusterWarning(
                code="replication_engine_count",
                message=(
                    "exactly one Replication Engine must run in the cluster; "
                    f"found {len(live_re)} on nodes that are not fenced"
                ),
                nodes=_names(live_re),
            )
        )
    fenced_re = [n for n in re_nodes if n.fenced]
    if fenced_re:
        out.append(
            ClusterWarning(
                code="replication_engine_fenced",
                message="a fenced node still has a Replication Engine; it is removed when the node answers",
                nodes=_names(fenced_re),
            )
        )

    for service in CRM_SERVICES:
        holders = [n for n in nodes if n.has_service(service)]
        if len(holders) != 1:
            out.append(
                ClusterWarning(
                    code="service_count",
                    message=(
                        f"the {SERVICE_LABELS[service]} service must be installed on exactly one node; "
                        f"found {len(holders)}"
                    ),
                    nodes=_names(holders),
                )
            )

    versions: dict[str, list[str]] = {}
    for n in nodes:
        if n.version is not None:
            versions.setdefault(n.version, []).append(n.name)
    if len(versions) > 1:
        desc = ", ".join(f"{v} on {', '.join(ns)}" for v, ns in sorted(versions.items()))
        out.append(
            ClusterWarning(
                code="version_mismatch",
                message=f"every node must run the same CRM version; found {desc}",
                nodes=sorted(n for ns in versions.values() for n in ns),
            )
        )

    out.extend(_sysparams_warnings(nodes, config))
    return out


def _sysparams_warnings(nodes: Sequence[NodeRecord], config: ClusterConfig) -> list[ClusterWarning]:
    out: list[ClusterWarning] = []
    registered = {n.name.lower(): n for n in nodes}
    listed = {s.lower(): s for s in config.server_names}
    missing = [n.name for n in nodes if n.name.lower() not in listed]
    unknown = [s for s in config.server_names if s.lower() not in registered]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"registered but not in ServerNames: {', '.join(missing)}")
        if unknown:
            parts.append(f"in ServerNames but not registered: {', '.join(unknown)}")
        out.append(
            ClusterWarning(
                code="server_names_mismatch",
                message="ServerNames does not match the registry (" + "; ".join(parts) + ")",
                nodes=missing + unknown,
            )
        )
    if config.fq_server_names:
        wrong = []
        for server, entry in zip(config.server_names, config.fq_server_names, strict=True):
            node = registered.get(server.lower())
            if node is not None and node.fqdn and node.fqdn.lower() != entry.lower():
                wrong.append((node.name, entry, node.fqdn))
        if wrong:
            desc = "; ".join(f"{n}: {e!r} (registered {f!r})" for n, e, f in wrong)
            out.append(
                ClusterWarning(
                    code="fq_server_names_mismatch",
                    message=f"FQServerNames entries differ from the registered web server names: {desc}",
                    nodes=[w[0] for w in wrong],
                )
            )
    elif config.server_names:
        out.append(
            ClusterWarning(
                code="fq_server_names_mismatch",
                message="FQServerNames is not set; the balancer cannot redirect to fully qualified names",
                nodes=[],
            )
        )
    for field, message in config.problems():
        out.append(ClusterWarning(code=f"{field}_not_a_server", message=message, nodes=[]))
    dtls = config.dtls_server_name
    if not dtls:
        out.append(ClusterWarning(code="dtls_server_name", message="DTLSServerName is not set", nodes=[]))
    elif dtls.lower() not in registered:
        out.append(
            ClusterWarning(
                code="dtls_server_name",
                message=f"DTLSServerName {dtls!r} is not a registered node",
                nodes=[dtls],
            )
        )
    return out


def agent_url_warnings(nodes: Sequence[NodeRecord], advertised: Mapping[str, str]) -> list[ClusterWarning]:
    """``agent_url_mismatch``: a node's heartbeats advertise another agent URL than the registered
    one (the registered one is kept; re-register the node to move its agent)."""
    out = []
    for n in nodes:
        seen = advertised.get(n.name)
        if seen and n.agent_url and seen.rstrip("/") != n.agent_url.rstrip("/"):
            out.append(
                ClusterWarning(
                    code="agent_url_mismatch",
                    message=(
                        f"{n.name}'s heartbeats advertise agent URL {seen!r}, but it is registered at "
                        f"{n.agent_url!r} (kept; re-register the node if its agent moved)"
                    ),
                    nodes=[n.name],
                )
            )
    return out


def held_down_warnings(held: Sequence[str], reason: str | None) -> list[ClusterWarning]:
    """``down_storm_held`` / ``controller_behind``: servers silent past the heartbeat time-out that
    the liveness guard keeps out of ``down`` (:mod:`controller.registry.liveness_guard`)."""
    if not held or reason is None:
        return []
    why = (
        "more of the cluster fell silent at once than a server failure explains (the controller's network?)"
        if reason == "down_storm"
        else "the controller itself was behind (its loop or state database lagged)"
    )
    return [
        ClusterWarning(
            code="down_storm_held" if reason == "down_storm" else "controller_behind",
            message=f"{', '.join(held)} silent past the heartbeat time-out but not marked down: {why}",
            nodes=list(held),
        )
    ]


def as_json(warnings: Sequence[ClusterWarning]) -> list[dict[str, Any]]:
    return [w.model_dump() for w in warnings]
