"""Which library path ``probe_library`` may touch: one on the share of the cluster's library.

The agent runs as a Windows administrator; opening ``\\\\host\\share`` sends that account's
credentials to ``host``. So a probe goes only to the share ``DocStore`` or ``DocTemplates`` is on
(read from ``Custom_SysParams``), or to one the agent's ``CRMCLUSTER_LIBRARY_SHARES`` names —
never to another host, and never to an administrative share (those are refused when the params are
validated, :func:`config.windows_paths.unc_path`). Both drivers call :func:`library_path`, so the
sandbox is exactly as strict as Windows.
"""

from __future__ import annotations

from config.sysparams import ClusterConfig
from config.windows_paths import within_shares
from node_agent.drivers.base import ActionFailed


def library_path(requested: str | None, *, config: ClusterConfig, extra_shares: list[str]) -> str:
    """The UNC path to probe: ``requested`` once it is on an allowed share, else DocStore."""
    configured = [p for p in (config.doc_store, config.doc_templates) if p]
    if requested is None:
        if not config.doc_store:
            raise ActionFailed("no library path: DocStore is not set in Custom_SysParams")
        return config.doc_store
    shares = [*extra_shares, *configured]
    if not shares:
        raise ActionFailed("no library share is configured: set DocStore first")
    if not within_shares(requested, shares):
        raise ActionFailed(
            f"{requested} is not on the library's share ({', '.join(shares)}); the agent probes no other"
        )
    return requested
