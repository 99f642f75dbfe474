"""What the dashboard shows, gathered once per interval and shared by every open page.

The dashboard is a client of the controller's own JSON API, called in-process
(``httpx.ASGITransport`` with the admin token), so the page shows exactly what ``crmcluster
status`` and ``crmcluster upgrade watch`` show: ``GET /api/v1/cluster`` (servers, warnings),
``GET /api/v1/upgrades`` and the current run, ``GET /api/v1/audit`` (recent changes; the
state database's ``audit`` table when that route is missing), ``GET /api/v1/maintenance?cached=true``
(the maintenance plan as last read from msdb; never a call to the agent per page refresh). The
balancer's current distribution comes from the balancer itself (``GET /api/v1/servers`` at ``balancer_url``),
else from the logged-on counts the controller keeps per node.

A :class:`Snapshot` is cached for ``interval`` seconds so ten open pages cost one poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp

from config.secrets import redact, redact_mapping
from config.state_schema import audit
from controller.context import ControllerContext

log = logging.getLogger("crmcluster.dashboard")

TERMINAL_RUN = frozenset({"succeeded", "failed", "restored", "aborted"})
AUDIT_ROWS = 12


@dataclass
class Snapshot:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    sysparams: dict[str, Any] = field(default_factory=dict)
    distribution: list[dict[str, Any]] = field(default_factory=list)
    distribution_source: str = "controller"
    run: dict[str, Any] | None = None
    audit: list[dict[str, Any]] = field(default_factory=list)
    #: The last maintenance report read from msdb (``GET /api/v1/maintenance?cached=true``).
    maintenance: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    taken_at: float = 0.0


def _runs(answer: Any) -> list[dict[str, Any]]:
    if isinstance(answer, list):
        return [r for r in answer if isinstance(r, dict)]
    if isinstance(answer, Mapping):
        for key in ("runs", "upgrades", "items"):
            if isinstance(answer.get(key), list):
                return [r for r in answer[key] if isinstance(r, dict)]
    return []


def current_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest run still going, else the newest run."""
    ordered = sorted(runs, key=lambda r: str(r.get("created_at") or ""), reverse=True)
    for run in ordered:
        if run.get("status") not in TERMINAL_RUN:
            return run
    return ordered[0] if ordered else None


class DashboardFeed:
    """Gathers :class:`Snapshot` objects for one controller app (see the module docstring)."""

    def __init__(
        self,
        *,
        app: ASGIApp,
        ctx: ControllerContext,
        interval: float = 1.0,
        balancer_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._app = app
        self._ctx = ctx
        self._balancer_transport = balancer_transport
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last: Snapshot | None = None

    async def snapshot(self, *, fresh: bool = False) -> Snapshot:
        async with self._lock:
            if (
                not fresh
                and self._last is not None
                and self._clock() - self._last.taken_at < self.interval * 0.9
            ):
                return self._last
            snap = await self._gather()
            snap.taken_at = self._clock()
            self._last = snap
            return snap

    async def _gather(self) -> Snapshot:
        snap = Snapshot()
        admin = self._ctx.settings.admin_token.get_secret_value()
        # A client address of its own: a brute-force block on loopback never blinds the dashboard.
        transport = httpx.ASGITransport(app=self._app, raise_app_exceptions=False, client=("dashboard", 0))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://dashboard.internal",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10.0,
        ) as api:
            cluster = await self._get(api, "/api/v1/cluster", snap)
            if isinstance(cluster, Mapping):
                snap.nodes = [n for n in cluster.get("nodes") or [] if isinstance(n, dict)]
                snap.warnings = [w for w in cluster.get("warnings") or [] if isinstance(w, dict)]
                sp = cluster.get("sysparams")
                snap.sysparams = dict(sp) if isinstance(sp, Mapping) else {}
            run = current_run(_runs(await self._get(api, "/api/v1/upgrades", snap, quiet_404=True)))
            if run is not None and run.get("id") is not None:
                detail = await self._get(api, f"/api/v1/upgrades/{run['id']}", snap)
                snap.run = detail if isinstance(detail, dict) else run
            entries = await self._get(api, f"/api/v1/audit?limit={AUDIT_ROWS}", snap, quiet_404=True)
            report = await self._get(api, "/api/v1/maintenance?cached=true", snap, quiet_404=True)
            snap.maintenance = report if isinstance(report, dict) else None
        if isinstance(entries, Mapping) and isinstance(entries.get("entries"), list):
            snap.audit = [e for e in entries["entries"] if isinstance(e, dict)][:AUDIT_ROWS]
        else:
            snap.audit = await self._audit(snap)
        await self._distribution(snap)
        return snap

    async def _get(
        self, api: httpx.AsyncClient, path: str, snap: Snapshot, *, quiet_404: bool = False
    ) -> Any:
        try:
            resp = await api.get(path)
        except httpx.HTTPError as exc:
            snap.problems.append(f"{path}: {type(exc).__name__}")
            return None
        if resp.status_code == 404 and quiet_404:
            return None
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {resp.status_code}"
            snap.problems.append(f"{path}: {redact(str(message))}")
            return None
        try:
            return resp.json()
        except ValueError:
            snap.problems.append(f"{path}: not JSON")
            return None

    async def _audit(self, snap: Snapshot) -> list[dict[str, Any]]:
        try:
            async with self._ctx.state_engine.connect() as conn:
                rows = (
                    await conn.execute(select(audit).order_by(audit.c.id.desc()).limit(AUDIT_ROWS))
                ).mappings()
                return [
                    {
                        "at": r["at"].isoformat(timespec="seconds") if r["at"] else "",
                        "actor": r["actor"],
                        "action": r["action"],
                        "target": r["target"],
                        "result": r["result"],
                        "message": redact(r["message"] or ""),
                        "details": redact_mapping(r["details"]),
                    }
                    for r in rows
                ]
        except (SQLAlchemyError, OSError) as exc:  # the page must still show the rest
            snap.problems.append(f"audit: {type(exc).__name__}")
            return []

    async def _distribution(self, snap: Snapshot) -> None:
        """Logged-on users per server: the balancer's own view when it answers, else the controller's."""
        states = {str(n.get("name")): str(n.get("state") or "") for n in snap.nodes}
        url = self._ctx.settings.balancer_url
        if url:
            admin = self._ctx.settings.admin_token.get_secret_value()
            try:
                async with httpx.AsyncClient(transport=self._balancer_transport, timeout=1.0) as client:
                    resp = await client.get(
                        url.rstrip("/") + "/api/v1/servers", headers={"Authorization": f"Bearer {admin}"}
                    )
                body = resp.json() if resp.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                body = None
            servers = body.get("servers") if isinstance(body, Mapping) else None
            if isinstance(body, Mapping) and isinstance(servers, list):
                snap.distribution = [
                    {
                        "name": str(s.get("name")),
                        "state": str(s.get("state") or states.get(str(s.get("name")), "")),
                        "logged_on": int(s.get("logged_on") or 0),
                        "pending": int(s.get("pending") or 0),
                    }
                    for s in servers
                    if isinstance(s, Mapping)
                ]
                snap.distribution_source = "balancer" + (" (stale)" if body.get("stale") else "")
                return
        snap.distribution = [
            {
                "name": str(n.get("name")),
                "state": str(n.get("state") or ""),
                "logged_on": int(n.get("logged_on") or 0),
                "pending": 0,
            }
            for n in snap.nodes
        ]
        snap.distribution_source = "controller"
