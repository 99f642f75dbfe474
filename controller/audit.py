"""The audit trail: every change made through the API — who, what, when, on what, and the result.

Details pass through :func:`config.secrets.redact_mapping` before they are stored, so license keys,
passwords and tokens never reach the table. Use :meth:`AuditTrail.change` around a change:

    async with ctx.audit.change(actor, "nodes.drain", target="crm2", details=body) as entry:
        ...                       # raises -> recorded as "failed" with the error's message
        entry.message = "draining; 4 users logged on"
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from config.secrets import redact, redact_mapping
from config.state_schema import audit, utcnow


@dataclass
class AuditEntry:
    actor: str
    action: str
    target: str | None
    details: Any
    result: str = "ok"
    message: str | None = None


class AuditTrail:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_record: Callable[[AuditEntry], None] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self._on_record = on_record

    async def record(self, entry: AuditEntry) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                audit.insert().values(
                    at=self.clock(),
                    actor=entry.actor,
                    action=entry.action,
                    target=entry.target,
                    details=redact_mapping(entry.details),
                    result=entry.result,
                    message=redact(entry.message)[:2000] if entry.message else None,
                )
            )
        if self._on_record is not None:
            self._on_record(entry)

    @contextlib.asynccontextmanager
    async def change(
        self, actor: str, action: str, *, target: str | None = None, details: Any = None
    ) -> AsyncIterator[AuditEntry]:
        """Record the change when the block ends: ``ok`` (or what the block set), else ``failed``."""
        entry = AuditEntry(actor=actor, action=action, target=target, details=details)
        try:
            yield entry
        except Exception as exc:
            entry.result = "failed"
            entry.message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            await self.record(entry)
            raise
        await self.record(entry)

    async def list(self, *, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        query = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(audit.c.id < before_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            {
                "id": r.id,
                "at": r.at.isoformat() + "Z",
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "details": r.details,
                "result": r.result,
                "message": r.message,
            }
            for r in rows
        ]
