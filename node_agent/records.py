"""The data integrity sample (the guide's "random sampling of 20 company records"): company
records and the CRM schema fingerprinted, so a baseline taken before an upgrade can be compared
with the same records after it, or after a restore. Plain SQLAlchemy: SQLite, PostgreSQL and SQL
Server alike.

A record's fingerprint is the sha256 of its base columns (id, name, type, status, web site,
updated date) — columns an upgrade adds do not change it. The schema's fingerprint covers every
table's columns and indexes and every view's columns.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import CrmTables

SAMPLE_SIZE = 20


def record_hash(values: list[Any]) -> str:
    norm = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return hashlib.sha256(json.dumps(norm, default=str).encode()).hexdigest()


async def fingerprint_companies(
    engine: AsyncEngine, tables: CrmTables, ids: list[int] | None, *, sample: int = SAMPLE_SIZE
) -> dict[str, Any]:
    """``{"records": {"<id>": sha256 | None}, "missing": [ids]}`` for ``ids`` or a random sample."""
    t = tables
    n = t.names
    base = [n.comp_id, n.comp_name, "Comp_Type", "Comp_Status", "Comp_WebSite", n.comp_updated_date]
    cols = [t.company.c[c] for c in base if c in t.company.c]
    async with engine.connect() as conn:
        if ids is None:
            all_ids = list((await conn.scalars(select(t.company.c[n.comp_id]))).all())
            ids = sorted(random.sample(all_ids, min(sample, len(all_ids))))
        rows = (await conn.execute(select(*cols).where(t.company.c[n.comp_id].in_(ids)))).all() if ids else []
    found = {int(r[0]): record_hash(list(r)) for r in rows}
    return {"records": {str(i): found.get(i) for i in ids}, "missing": [i for i in ids if i not in found]}


async def schema_fingerprint(engine: AsyncEngine, *, skip: Iterable[str] = ()) -> str:
    """sha256 over tables (columns, indexes) and views (columns) of the database."""
    skipped = set(skip)

    def describe(sync_conn: Any) -> dict[str, Any]:
        insp = inspect(sync_conn)
        out: dict[str, Any] = {}
        for table in sorted(insp.get_table_names()):
            if table in skipped:
                continue
            out[f"table:{table}"] = {
                "columns": [(c["name"], str(c["type"])) for c in insp.get_columns(table)],
                "indexes": sorted(
                    (str(i["name"]), tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(table)
                ),
            }
        for view in sorted(insp.get_view_names()):
            out[f"view:{view}"] = [c["name"] for c in insp.get_columns(view)]
        return out

    async with engine.connect() as conn:
        described = await conn.run_sync(describe)
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
