"""The CRM website's HTTPS binding, read before the cluster is switched to HTTPS (the guide: "you
must manually configure Secure Sockets Layer (SSL) on the web server (IIS) used by Sage CRM and
create an SSL binding for the CRM site"):

================================ ===============================================================
the binding                      ``appcmd list site "<site>" /text:bindings``
                                 (``http/*:80:,https/*:443:crm1.example.com``)
its certificate                  ``netsh http show sslcert ipport=0.0.0.0:<port>`` (an SNI binding:
                                 ``hostnameport=<host>:<port>``): ``Certificate Hash``
that it answers                  a TLS handshake with 127.0.0.1:<port>, the server's name sent as
                                 SNI (the agent's own connection; the certificate is not judged)
================================ ===============================================================
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from node_agent.drivers.base import OperationContext
from node_agent.drivers.windows.host import WindowsHost
from node_agent.protocol import HttpsBindingParams

_HASH = re.compile(r"Certificate Hash\s*:\s*([0-9A-Fa-f]+)")
Handshake = Callable[[str | None, int], Awaitable[bool]]


def parse_bindings(text: str) -> list[str]:
    """``http/*:80:,https/*:443:crm1`` → each binding."""
    return [b.strip() for b in text.replace("\n", ",").split(",") if b.strip()]


def https_binding(bindings: list[str], port: int) -> tuple[bool, str | None]:
    """Whether one binding is ``https`` on ``port``, and its host header (SNI) if it has one."""
    for b in bindings:
        proto, _, info = b.partition("/")
        parts = info.split(":")
        if proto.lower() == "https" and len(parts) >= 2 and parts[1] == str(port):
            return True, (":".join(parts[2:]) or None)
    return False, None


async def tls_handshake(host: str | None, port: int, *, timeout: float = 5.0) -> bool:
    """A TLS handshake with 127.0.0.1:``port`` (SNI ``host``); the certificate is not verified:
    this asks whether the binding answers, the name check is the FQ names'."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=host or "localhost"),
            timeout,
        )
    except (OSError, ssl.SSLError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass
    return True


class WindowsHttps:
    def __init__(
        self, host: WindowsHost, *, appcmd: str, site: str, netsh: str, handshake: Handshake
    ) -> None:
        self.host = host
        self.appcmd = appcmd
        self.site = site
        self.netsh = netsh
        self.handshake = handshake

    async def check_https_binding(self, params: HttpsBindingParams, ctx: OperationContext) -> dict[str, Any]:
        listed = await self.host.query(ctx, [self.appcmd, "list", "site", self.site, "/text:bindings"])
        out: dict[str, Any] = {"site": self.site, "port": params.port, "bindings": [], "bound": False}
        if listed.returncode != 0:
            out["message"] = (
                f"appcmd could not list the bindings of {self.site}: {listed.output.strip()[:200]}"
            )
            return out
        out["bindings"] = parse_bindings(listed.output)
        bound, sni = https_binding(out["bindings"], params.port)
        out["bound"] = bound
        if not bound:
            out["message"] = f"{self.site} has no https binding on port {params.port}"
            return out
        where = f"hostnameport={sni}:{params.port}" if sni else f"ipport=0.0.0.0:{params.port}"
        cert = await self.host.query(ctx, [self.netsh, "http", "show", "sslcert", where])
        m = _HASH.search(cert.output) if cert.returncode == 0 else None
        out["certificate"] = m.group(1) if m else None
        ctx.record(
            f"agent: TLS handshake with 127.0.0.1:{params.port} (SNI {sni or params.host or 'localhost'})"
        )
        out["answered"] = await self.handshake(sni or params.host, params.port)
        if out["certificate"] is None:
            out["message"] = f"no certificate is bound to port {params.port} (netsh http show sslcert)"
        elif not out["answered"]:
            out["message"] = f"nothing answered a TLS handshake on port {params.port}"
        else:
            out["message"] = f"https binding on port {params.port}, certificate {out['certificate']}"
        return out
