"""API tokens with roles (``crmcluster tokens create --role R --name N``), kept in the state
database's ``api_tokens`` as a hash only.

A token is ``ct_`` + 43 random URL-safe characters (256 bits), shown once when it is made. The
table holds its name, role, who made it and when, and ``sha256`` of the token: a copy of the
database opens nothing. :meth:`ApiTokens.lookup` finds a presented token by its hash.

The controller authenticates with it (:mod:`controller.access.authn`); the balancer reads the same
table, so one viewer token lets Prometheus scrape both. A lookup is remembered for
:data:`CACHE_SECONDS` (revoking here forgets at once; another process sharing the database stops
taking the token within that time).

The bootstrap credentials are not in the table: ``CRMCLUSTER_ADMIN_TOKEN`` (and the optional
``CRMCLUSTER_OPERATOR_TOKEN``) from settings. Their names, ``admin`` and ``operator``, are
reserved, as is anything that looks like an agent's (``agent:…``).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from config.roles import Role
from config.secrets import register_secret, secret_hash
from config.state_schema import api_tokens, dashboard_sessions, utcnow

PREFIX = "ct_"
CACHE_SECONDS = 5.0
#: The bootstrap credentials' names (settings), never an API token's.
RESERVED_NAMES = frozenset({"admin", "operator"})
NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)
#: How often ``last_used_at`` is written for one token (a scrape every 15 s writes nothing more).
_TOUCH_SECONDS = 60.0


class TokenExists(Exception):
    pass


class UnknownToken(Exception):
    pass


@dataclass(frozen=True)
class ApiToken:
    name: str
    role: Role
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None

    def public(self) -> dict[str, Any]:
        """What ``GET /api/v1/tokens`` shows: never the token, never its hash."""
        return {
            "name": self.name,
            "role": self.role.value,
            "created_at": self.created_at.isoformat() + "Z",
            "created_by": self.created_by,
            "last_used_at": self.last_used_at.isoformat() + "Z" if self.last_used_at else None,
        }


def check_name(name: str) -> str:
    """The name in normal form, or ValueError saying why it is refused."""
    if not _NAME.match(name):
        raise ValueError("a token's name is 1 to 63 lower-case letters, digits, '.', '_' or '-'")
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is the bootstrap token's name (settings); choose another")
    return name


class ApiTokens:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self._clock = clock
        self._monotonic = monotonic
        self._by_hash: dict[str, tuple[float, ApiToken | None]] = {}
        self._touched: dict[str, float] = {}

    def forget_cache(self) -> None:
        self._by_hash.clear()

    async def create(self, name: str, role: Role, *, created_by: str | None) -> tuple[ApiToken, str]:
        """A new token: its record and the token itself (returned this once, never stored)."""
        check_name(name)
        token = PREFIX + secrets.token_urlsafe(32)
        register_secret(token)
        record = ApiToken(
            name=name, role=role, created_at=self._clock(), created_by=created_by, last_used_at=None
        )
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    api_tokens.insert().values(
                        name=name,
                        role=role.value,
                        token_hash=secret_hash(token),
                        created_at=record.created_at,
                        created_by=created_by,
                    )
                )
        except IntegrityError:
            raise TokenExists(f"a token named {name!r} exists; revoke it first") from None
        self.forget_cache()
        return record, token

    async def list(self) -> list[ApiToken]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(api_tokens).order_by(api_tokens.c.name))).all()
        return [_record(r) for r in rows]

    async def revoke(self, name: str) -> ApiToken:
        """Delete the token (and end the dashboard sessions opened with it)."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(api_tokens).where(api_tokens.c.name == name))).first()
            if row is None:
                raise UnknownToken(f"no API token named {name!r}")
            await conn.execute(delete(api_tokens).where(api_tokens.c.name == name))
            await conn.execute(delete(dashboard_sessions).where(dashboard_sessions.c.credential == name))
        self.forget_cache()
        return _record(row)

    async def lookup(self, token: str) -> ApiToken | None:
        """The token's record, or None when no token of that hash exists (revoked or never made)."""
        if not token.startswith(PREFIX):
            return None
        digest = secret_hash(token)
        now = self._monotonic()
        hit = self._by_hash.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            found = hit[1]
        else:
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest))
                ).first()
            found = _record(row) if row is not None else None
            if len(self._by_hash) > 10_000:
                self._by_hash.clear()  # bounded whatever a caller sends
            self._by_hash[digest] = (now, found)
        if found is not None:
            register_secret(token)
            await self._touch(found.name, now)
        return found

    async def _touch(self, name: str, now: float) -> None:
        last = self._touched.get(name)
        if last is not None and now - last < _TOUCH_SECONDS:
            return
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[name] = now
        async with self.engine.begin() as conn:
            await conn.execute(
                update(api_tokens).where(api_tokens.c.name == name).values(last_used_at=self._clock())
            )


def _record(row: Any) -> ApiToken:
    return ApiToken(
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        created_by=row.created_by,
        last_used_at=row.last_used_at,
    )
