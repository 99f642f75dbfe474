"""What the demo puts in its embedded database before the services start: the state schema, the
CRM tables, the multi-server settings in ``Custom_SysParams`` (ServerNames, FQServerNames = the
stand-in web servers' host:port, DTLSServerName, DocStore/DocTemplates) and the demo users.

Sessions left open by an earlier run are closed, so the users the demo logs on are the only ones
counted, and nodes an earlier run with more ``--nodes`` registered are forgotten. Companies are
seeded by the database server's sandbox (``crm1``) when it first starts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update

from config.crm_schema import create_embedded_crm_tables, crm_tables
from config.database import make_engine
from config.migrate import migrate
from config.settings import CommonSettings
from config.state_schema import nodes
from config.sysparams import SysParamsStore

DEMO_USERS = (
    "jsmith",
    "mjones",
    "akumar",
    "lchen",
    "pgarcia",
    "tnguyen",
    "rbrown",
    "swilson",
    "dlee",
    "kmartin",
    "ebaker",
    "ocarter",
)
DOC_STORE = "\\\\fileserver\\CRMLibrary\\Library"
DOC_TEMPLATES = "\\\\fileserver\\CRMLibrary\\Templates"


async def prepare_database(
    *,
    crm_url: str,
    state_url: str,
    server_names: list[str],
    fq_server_names: list[str],
    dtls_server_name: str,
) -> None:
    state = make_engine(state_url)
    engine = make_engine(crm_url)
    try:
        await migrate(state)
        async with state.begin() as conn:
            await conn.execute(delete(nodes).where(nodes.c.name.not_in(server_names)))
        tables = crm_tables()
        await create_embedded_crm_tables(engine, tables)
        store = SysParamsStore(tables, CommonSettings(_env_file=None).sysparam_row_names())
        n = tables.names
        async with engine.begin() as conn:
            await store.write(
                conn,
                {
                    "server_names": server_names,
                    "fq_server_names": fq_server_names,
                    "dtls_server_name": dtls_server_name,
                    "do_load_balancing": False,
                    "doc_store": DOC_STORE,
                    "doc_templates": DOC_TEMPLATES,
                },
            )
            have = {r[0] for r in await conn.execute(select(tables.users.c[n.user_logon]))}
            missing = [u for u in DEMO_USERS if u not in have]
            if missing:
                await conn.execute(tables.users.insert(), [{n.user_logon: u} for u in missing])
            await conn.execute(
                update(tables.activity)
                .where(tables.acty("acty_logoff").is_(None))
                .values({n.acty_logoff: "Y", n.acty_logoff_time: datetime.now(UTC).replace(tzinfo=None)})
            )
    finally:
        await engine.dispose()
        await state.dispose()


async def company_count(url: str) -> int:
    engine = make_engine(url)
    try:
        tables = crm_tables()
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(tables.company))).scalar() or 0)
    finally:
        await engine.dispose()
