"""How the controller verifies an agent that speaks HTTPS (:mod:`config.tls`).

With ``CRMCLUSTER_AGENT_CA_FILE``: the agent's certificate must be issued by that CA, for the
host name of its URL. Without: the certificate the agent presented when it was registered is
pinned (``node_credentials.tls_certificate``) — checked then against the fingerprint the
administrator gave (``tls_fingerprint`` of ``POST /api/v1/nodes``, printed by ``crmcluster tls
new-cert``), if one was given — and only that certificate is accepted afterwards. An impostor at
the agent's address fails the TLS handshake: no token, no license key is ever sent to it.
Re-registering the node pins its certificate anew (after a renewal).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from config.service_url import parse_service_url
from config.tls import TlsError, ca_context, fetch_certificate, fingerprint, pinned_context, same_fingerprint
from controller.access.node_tokens import NodeTokens
from controller.agents.client import AgentUnreachable
from controller.errors import AgentsUnavailable, InvalidChange

log = logging.getLogger("crmcluster.security")


def agent_verifier(
    node_tokens: NodeTokens, ca_file: Path | None
) -> Callable[[str, str | None], Awaitable[ssl.SSLContext | None]]:
    """``verify_for(agent_url, node)`` for the agent pool."""
    ca = ca_context(ca_file) if ca_file is not None else None

    async def verify_for(agent_url: str, node: str | None) -> ssl.SSLContext | None:
        if not agent_url.startswith("https://"):
            return None
        if ca is not None:
            return ca
        pem = await (node_tokens.pinned(node=node) if node else node_tokens.pinned(agent_url=agent_url))
        if pem is None:
            raise AgentUnreachable(
                f"agent {agent_url}: no certificate pinned for it; register it again (POST /api/v1/nodes)"
            )
        return pinned_context(pem)

    return verify_for


async def certificate_to_pin(agent_url: str, expected: str | None, *, timeout: float = 5.0) -> str:
    """The certificate the agent at ``agent_url`` presents (PEM), once it matches ``expected``."""
    url = parse_service_url(agent_url)
    try:
        pem = await fetch_certificate(url.host, url.port, timeout=timeout)
    except TlsError as exc:
        raise AgentsUnavailable(str(exc), details={"agent_url": agent_url}) from None
    got = fingerprint(pem)
    if expected is not None and not same_fingerprint(pem, expected):
        raise InvalidChange(
            f"the agent at {agent_url} presents a certificate of fingerprint {got}, not the one given",
            details={"agent_url": agent_url, "presented": got},
        )
    if expected is None:
        log.warning("agent %s: certificate %s pinned on first use (no fingerprint given)", agent_url, got)
    return pem
