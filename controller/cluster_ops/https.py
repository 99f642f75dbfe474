"""Switching the cluster to HTTPS (or back): the guide's "Use HTTPS" and "After you enable HTTPS,
update the HTTPPort and OutlookPort entries in the Custom_Sysparams table ... with the port you
configured in the SSL binding settings".

    PUT /api/v1/https {"enabled": true, "port": 443, "outlook_port": 443}

1. Refused (422) while a Fully qualified CRM Web Server Name, or the DTLS server's name or entry, is
   an IP address: "If any of these servers require HTTPS, the server name must be the name
   specified on the server's SSL certificate" — a certificate names a host, not an address.
2. Every server's CRM website must have an https binding on the port with a certificate, and
   answer a TLS handshake there (``check_https_binding`` through its agent); otherwise 409 naming
   each server and what it lacks. Nothing is written until all answer.
3. ``HTTPPort``, ``OutlookPort`` and ``crmcluster_UseHTTPS`` written in one transaction. The
   balancer reads Custom_SysParams every few seconds: its redirects follow without a restart.

Switching back (``enabled: false``) writes port 80 (or the one given) and ``N``; it checks nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from config.database import unavailable_errors
from config.sysparams import ClusterConfig, split_host_port
from controller.context import ControllerContext
from controller.errors import ClusterBusy, InvalidChange
from controller.jobs.runner import new_op_id, run_agent_op
from controller.jobs.store import StepError
from controller.registry.cluster import read_config
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Action, HttpsBindingParams, HttpsBindingResult

CHECK_TIMEOUT = 60.0


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def addresses(cfg: ClusterConfig) -> list[str]:
    """The names HTTPS cannot use: FQ entries and the DTLS server (its name or its entry) that are
    IP addresses."""
    bad = [e for e in cfg.fq_server_names if _is_address(split_host_port(e)[0])]
    dtls = cfg.dtls_server_name
    if dtls:
        if _is_address(dtls):
            bad.append(f"DTLSServerName {dtls}")
        elif dtls in cfg.server_names and _is_address(split_host_port(cfg.fq_for(dtls))[0]):
            entry = f"{cfg.fq_for(dtls)} (the DTLS server's entry)"
            if cfg.fq_for(dtls) in bad:
                bad[bad.index(cfg.fq_for(dtls))] = entry
            else:
                bad.append(entry)
    return bad


def view(cfg: ClusterConfig) -> dict[str, Any]:
    return {
        "enabled": bool(cfg.use_https),
        "use_https": cfg.use_https,
        "http_port": cfg.http_port,
        "outlook_port": cfg.outlook_port,
        "addresses": {s: f"{cfg.scheme or 'http'}://{cfg.web_address(s)}" for s in cfg.server_names},
    }


async def _check_bindings(ctx: ControllerContext, cfg: ClusterConfig, port: int) -> dict[str, dict[str, Any]]:
    nodes = {n.name.lower(): n for n in await ctx.registry.list_nodes()}

    async def one(server: str) -> dict[str, Any]:
        node: NodeRecord | None = nodes.get(server.lower())
        if node is None or not node.agent_url:
            return {"ok": False, "message": f"{server} has no registered agent to check its binding"}
        host = split_host_port(cfg.fq_for(server))[0]
        try:
            rec = await run_agent_op(
                ctx,
                node,
                Action.CHECK_HTTPS_BINDING,
                HttpsBindingParams(port=port, host=host if not _is_address(host) else None),
                op_id=new_op_id("https.check_binding"),
                timeout=CHECK_TIMEOUT,
            )
        except StepError as exc:
            return {"ok": False, "message": str(exc)}
        r = rec.result_as(HttpsBindingResult)
        ok = r.bound and r.answered is not False and r.certificate is not None
        return {"ok": ok, "message": r.message, "bindings": r.bindings, "certificate": r.certificate}

    results = await asyncio.gather(*(one(s) for s in cfg.server_names))
    return dict(zip(cfg.server_names, results, strict=True))


async def switch(
    ctx: ControllerContext, *, enabled: bool, port: int | None, outlook_port: int | None
) -> dict[str, Any]:
    cfg = await read_config(ctx)
    port = port or (443 if enabled else 80)
    outlook = outlook_port or port
    checks: dict[str, dict[str, Any]] = {}
    if enabled:
        if not cfg.server_names:
            raise ClusterBusy("no server in ServerNames: there is nothing to switch to HTTPS")
        bad = addresses(cfg)
        if bad:
            raise InvalidChange(
                "HTTPS needs the names on the servers' SSL certificates; these are IP addresses: "
                + ", ".join(bad)
                + " (set fq_server_names to DNS names first)",
                details={"addresses": bad},
            )
        checks = await _check_bindings(ctx, cfg, port)
        failing = {s: c["message"] for s, c in checks.items() if not c["ok"]}
        if failing:
            raise ClusterBusy(
                f"not every server answers HTTPS on port {port}: "
                + "; ".join(f"{s}: {m}" for s, m in failing.items()),
                details={"servers": checks},
            )
    with unavailable_errors("CRM database"):
        async with ctx.crm_engine.begin() as conn:
            new = await ctx.sysparams.write(
                conn, {"http_port": port, "outlook_port": outlook, "use_https": enabled}
            )
    return {**view(new), "checks": checks}
