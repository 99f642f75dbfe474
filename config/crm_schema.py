"""The CRM database tables crmcluster touches, with configurable table and column names.

Sage CRM owns these tables in production (SQL Server); we read ``Activity``, ``Users`` and
``Company`` and read/write ``Custom_SysParams``. :func:`create_embedded_crm_tables` creates them
only for the embedded or demo database, never in a real Sage CRM (SQL Server) database.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncEngine

_IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class CrmNames(BaseModel):
    """Table and column names of the CRM database (settings: ``CRMCLUSTER_CRM_NAMES__<FIELD>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sysparams_table: str = Field("Custom_SysParams", pattern=_IDENT)
    parm_id: str = Field("Parm_ParmID", pattern=_IDENT)
    parm_name: str = Field("Parm_Name", pattern=_IDENT)
    parm_value: str = Field("Parm_Value", pattern=_IDENT)
    parm_deleted: str = Field("Parm_Deleted", pattern=_IDENT)

    activity_table: str = Field("Activity", pattern=_IDENT)
    acty_id: str = Field("Acty_ActivityId", pattern=_IDENT)
    acty_user_id: str = Field("Acty_UserId", pattern=_IDENT)
    acty_server_name: str = Field("Acty_ServerName", pattern=_IDENT)
    acty_logon_time: str = Field("Acty_LogonTime", pattern=_IDENT)
    acty_logoff: str = Field("Acty_Logoff", pattern=_IDENT)
    acty_logoff_time: str = Field("Acty_LogoffTime", pattern=_IDENT)

    users_table: str = Field("Users", pattern=_IDENT)
    user_id: str = Field("User_UserId", pattern=_IDENT)
    user_logon: str = Field("User_Logon", pattern=_IDENT)

    company_table: str = Field("Company", pattern=_IDENT)
    comp_id: str = Field("Comp_CompanyId", pattern=_IDENT)
    comp_name: str = Field("Comp_Name", pattern=_IDENT)
    comp_updated_date: str = Field("Comp_UpdatedDate", pattern=_IDENT)


@dataclass(frozen=True)
class CrmTables:
    """SQLAlchemy tables bound to the configured names. Columns are reached as ``t.sysparams.c[n.parm_name]``;
    the helpers below spare callers that indirection."""

    names: CrmNames
    metadata: MetaData
    sysparams: Table
    activity: Table
    users: Table
    company: Table

    # Column shortcuts -------------------------------------------------------------------------
    def parm(self, field: str) -> Column[object]:
        col: Column[object] = self.sysparams.c[getattr(self.names, field)]
        return col

    def acty(self, field: str) -> Column[object]:
        col: Column[object] = self.activity.c[getattr(self.names, field)]
        return col


def crm_tables(names: CrmNames | None = None) -> CrmTables:
    n = names or CrmNames()
    md = MetaData()
    sysparams = Table(
        n.sysparams_table,
        md,
        Column(n.parm_id, Integer, primary_key=True, autoincrement=True),
        Column(n.parm_name, String(100), nullable=False, index=True),
        Column(n.parm_value, Text, nullable=True),
        Column(n.parm_deleted, String(1), nullable=True),
    )
    activity = Table(
        n.activity_table,
        md,
        Column(n.acty_id, Integer, primary_key=True, autoincrement=True),
        Column(n.acty_user_id, Integer, nullable=False),
        Column(n.acty_server_name, String(100), nullable=False, index=True),
        Column(n.acty_logon_time, DateTime, nullable=False),
        Column(n.acty_logoff, String(1), nullable=True),
        Column(n.acty_logoff_time, DateTime, nullable=True),
    )
    users = Table(
        n.users_table,
        md,
        Column(n.user_id, Integer, primary_key=True, autoincrement=True),
        Column(n.user_logon, String(100), nullable=False, unique=True),
    )
    company = Table(
        n.company_table,
        md,
        Column(n.comp_id, Integer, primary_key=True, autoincrement=True),
        Column(n.comp_name, String(200), nullable=False),
        Column("Comp_Type", String(40), nullable=True),
        Column("Comp_Status", String(40), nullable=True),
        Column("Comp_WebSite", String(200), nullable=True),
        Column(n.comp_updated_date, DateTime, nullable=True),
    )
    return CrmTables(n, md, sysparams, activity, users, company)


class NotEmbeddedDatabase(Exception):
    """Refused: CRM tables are never created in a real Sage CRM (SQL Server) database."""


async def create_embedded_crm_tables(engine: AsyncEngine, tables: CrmTables) -> None:
    """Create the CRM tables in the embedded (SQLite) or a test/demo PostgreSQL database."""
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise NotEmbeddedDatabase(
            f"refusing to create CRM tables on {engine.dialect.name}: that is Sage CRM's own database"
        )
    async with engine.begin() as conn:
        await conn.run_sync(tables.metadata.create_all)
