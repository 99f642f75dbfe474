"""The sandbox IIS's bindings on the CRM website, for ``check_https_binding``: ``http`` on the
stand-in web server's port, and ``https`` on ``CRMCLUSTER_SANDBOX_HTTPS_PORT`` when set (or the
ports in its state's ``https_ports``, which tests change at run time). The binding is played: the
sandbox says it answers when it has it; it serves no TLS."""

from __future__ import annotations

from typing import Any

from node_agent.drivers.base import OperationContext
from node_agent.drivers.sandbox.node import SandboxNode
from node_agent.protocol import HttpsBindingParams


class SandboxHttps:
    def __init__(self, driver: SandboxNode) -> None:
        self.d = driver

    def https_ports(self) -> list[int]:
        ports = self.d.state.get("https_ports")
        if ports is None:
            port = self.d.settings.sandbox_https_port
            return [port] if port else []
        return [int(p) for p in ports]

    async def check_https_binding(self, params: HttpsBindingParams, ctx: OperationContext) -> dict[str, Any]:
        site = self.d.settings.windows_site
        ctx.record(f'sandbox (played): appcmd list site "{site}" /text:bindings')
        bindings = [f"http/*:{self.d.state.get('web_port') or 80}:"] + [
            f"https/*:{p}:" for p in self.https_ports()
        ]
        bound = params.port in self.https_ports()
        return {
            "site": site,
            "port": params.port,
            "bindings": bindings,
            "bound": bound,
            "certificate": "sandbox-played-certificate" if bound else None,
            "answered": bound,
            "message": f"https binding on port {params.port}"
            if bound
            else f"no https binding on port {params.port} (bindings: {', '.join(bindings)})",
        }
