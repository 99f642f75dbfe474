"""One identity per agent: each registered node has a token of its own.

Registering a node issues its token, shown once (the answer of ``POST /api/v1/nodes``, or of
``POST /api/v1/nodes/{name}/token`` when it is rotated). The state database keeps, in
``node_credentials``, only the token's hash and a random nonce — never the token:

    token = "nt_" + base64url(HMAC-SHA256(K, name + "\\0" + nonce))
    K     = HMAC-SHA256(CRMCLUSTER_SECRET_KEY, "crmcluster node token v1")

so the controller can call the agent with its own token (it re-derives it), while a copy of the
database without the secret key yields no token. What a node token may do:

- the controller sends it to *that* node's agent only — the agent compares it with its
  ``CRMCLUSTER_AGENT_TOKEN`` — so one agent's token controls no other agent;
- an agent sends it with heartbeats: :meth:`NodeTokens.node_for` names the node it belongs to,
  and a heartbeat for any other node is refused (403).

Rotating makes a new nonce: the old token stops working at once on this controller (and within
:data:`CACHE_SECONDS` on another one sharing the database).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from config.secrets import register_secret, secret_hash
from config.state_schema import node_credentials, nodes, utcnow

#: How long a looked-up token (or its absence) is remembered before the database is asked again.
CACHE_SECONDS = 5.0
PREFIX = "nt_"


class NodeTokens:
    def __init__(
        self,
        engine: AsyncEngine,
        secret_key: str,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self._key = hmac.new(secret_key.encode(), b"crmcluster node token v1", hashlib.sha256).digest()
        self._clock = clock
        self._monotonic = monotonic
        self._by_hash: dict[str, tuple[float, str | None]] = {}
        self._by_url: dict[str, tuple[float, str | None]] = {}

    def derive(self, node: str, nonce: str) -> str:
        mac = hmac.new(self._key, f"{node}\0{nonce}".encode(), hashlib.sha256).digest()
        token = PREFIX + base64.urlsafe_b64encode(mac).decode().rstrip("=")
        register_secret(token)
        return token

    def _forget_cache(self) -> None:
        self._by_hash.clear()
        self._by_url.clear()

    async def issue(self, node: str) -> str:
        """A new token for ``node`` (the old one, if any, stops working); returned, never stored."""
        nonce = secrets.token_urlsafe(24)
        token = self.derive(node, nonce)
        values = {"token_hash": secret_hash(token), "token_nonce": nonce, "issued_at": self._clock()}
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(node_credentials).where(node_credentials.c.node == node).values(**values)
            )
            if result.rowcount == 0:
                await conn.execute(node_credentials.insert().values(node=node, **values))
        self._forget_cache()
        return token

    async def has_token(self, node: str) -> bool:
        async with self.engine.connect() as conn:
            row = await conn.execute(select(node_credentials.c.node).where(node_credentials.c.node == node))
            return row.first() is not None

    async def forget(self, node: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(node_credentials).where(node_credentials.c.node == node))
        self._forget_cache()

    async def node_for(self, token: str) -> str | None:
        """The node ``token`` belongs to, or None (looked up by its hash)."""
        digest = secret_hash(token)
        now = self._monotonic()
        hit = self._by_hash.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(node_credentials.c.node).where(node_credentials.c.token_hash == digest)
                )
            ).first()
        node = row[0] if row is not None else None
        if len(self._by_hash) > 10_000:
            self._by_hash.clear()
        self._by_hash[digest] = (now, node)
        return node

    async def token_for_node(self, node: str) -> str | None:
        """The token of ``node`` (re-derived from its nonce), or None when it has none."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(node_credentials.c.token_nonce).where(node_credentials.c.node == node)
                )
            ).first()
        return self.derive(node, row[0]) if row is not None else None

    async def pin(self, node: str, cert_pem: str | None) -> None:
        """Keep ``cert_pem`` as the one certificate ``node``'s agent may present (None: forget it)."""
        from config.tls import fingerprint

        values = {"tls_certificate": cert_pem, "tls_fingerprint": fingerprint(cert_pem) if cert_pem else None}
        async with self.engine.begin() as conn:
            await conn.execute(
                update(node_credentials).where(node_credentials.c.node == node).values(**values)
            )
        self._forget_cache()

    async def pinned(self, *, node: str | None = None, agent_url: str | None = None) -> str | None:
        """The certificate pinned for ``node`` (or the node registered at ``agent_url``), as PEM."""
        query = select(node_credentials.c.tls_certificate)
        if node is not None:
            query = query.where(node_credentials.c.node == node)
        else:
            query = query.join(nodes, nodes.c.name == node_credentials.c.node).where(
                nodes.c.agent_url == agent_url
            )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return rows[0][0] if len(rows) == 1 else None

    async def token_for_url(self, agent_url: str) -> str | None:
        """The token of the node registered at ``agent_url`` (what the controller sends there)."""
        now = self._monotonic()
        hit = self._by_url.get(agent_url)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(nodes.c.name, node_credentials.c.token_nonce)
                    .join(node_credentials, node_credentials.c.node == nodes.c.name)
                    .where(nodes.c.agent_url == agent_url)
                )
            ).all()
        # Two nodes registered at one URL: send neither token (registration refuses that case).
        token = self.derive(rows[0][0], rows[0][1]) if len(rows) == 1 else None
        self._by_url[agent_url] = (now, token)
        return token
