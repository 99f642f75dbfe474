"""Custom_SysParams: the cluster configuration read from and written back to Sage CRM's rows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import CrmNames, CrmTables, create_embedded_crm_tables, crm_tables
from config.errors import SysParamsError
from config.settings import CommonSettings
from config.sysparams import (
    ClusterConfig,
    SysParamsStore,
    format_bool,
    format_list,
    is_unc,
    parse_bool,
    parse_list,
)

ROWS = CommonSettings().sysparam_row_names()


def store(tables: CrmTables, rows: dict[str, str] | None = None) -> SysParamsStore:
    return SysParamsStore(tables, rows or ROWS)


async def insert_rows(
    engine: AsyncEngine, tables: CrmTables, rows: list[tuple[str, str | None, str | None]]
) -> None:
    n = tables.names
    async with engine.begin() as conn:
        for name, value, deleted in rows:
            await conn.execute(
                tables.sysparams.insert().values(
                    {n.parm_name: name, n.parm_value: value, n.parm_deleted: deleted}
                )
            )


async def all_rows(engine: AsyncEngine, tables: CrmTables) -> list[tuple[str, str | None, str | None]]:
    n = tables.names
    async with engine.connect() as conn:
        res = await conn.execute(
            select(tables.parm("parm_name"), tables.parm("parm_value"), tables.parm("parm_deleted")).order_by(
                tables.parm("parm_id")
            )
        )
        _ = n
        return [tuple(r) for r in res]


async def test_reads_guide_settings_and_ignores_deleted_rows(
    crm_engine: AsyncEngine, tables: CrmTables
) -> None:
    await insert_rows(
        crm_engine,
        tables,
        [
            ("ServerNames", "crm1;crm2;crm3", None),
            ("ServerNames", "old1;old2", "Y"),  # deleted: does not count
            ("FQServerNames", "crm1.example.com;crm2.example.com:8443;crm3.example.com", None),
            ("DoLoadBalancing", "True", None),
            ("DTLSServerName", "crm2", None),
            ("HTTPPort", "443", None),
            ("DocStore", r"\\files\crm\Library", None),
            ("SomethingElse", "kept", None),
        ],
    )
    async with crm_engine.connect() as conn:
        cfg = await store(tables).read(conn)
    assert cfg.server_names == ["crm1", "crm2", "crm3"]
    assert cfg.fq_for("crm2") == "crm2.example.com:8443"
    assert cfg.do_load_balancing is True
    assert cfg.dtls_server_name == "crm2"
    assert cfg.http_port == 443 and cfg.outlook_port is None
    assert cfg.doc_store == r"\\files\crm\Library"


async def test_empty_database_reads_as_empty_config(crm_engine: AsyncEngine, tables: CrmTables) -> None:
    async with crm_engine.connect() as conn:
        cfg = await store(tables).read(conn)
    assert cfg == ClusterConfig()
    assert cfg.do_load_balancing is False  # no row: "a load balancing application performs load balancing"


async def test_partial_write_keeps_other_rows_untouched(crm_engine: AsyncEngine, tables: CrmTables) -> None:
    await insert_rows(
        crm_engine,
        tables,
        [
            ("ServerNames", "crm1;crm2", None),
            ("ServerNames", "ghost", "Y"),
            ("DoLoadBalancing", "1", None),
            ("Unrelated", "x", None),
        ],
    )
    async with crm_engine.begin() as conn:
        new = await store(tables).write(
            conn, {"server_names": ["crm1", "crm2", "crm3"], "dtls_server_name": "crm3"}
        )
    assert new.server_names == ["crm1", "crm2", "crm3"] and new.do_load_balancing is True
    rows = await all_rows(crm_engine, tables)
    assert ("ServerNames", "crm1;crm2;crm3", None) in rows
    assert ("ServerNames", "ghost", "Y") in rows  # deleted row untouched
    assert ("DoLoadBalancing", "1", None) in rows  # not named in the change: left as written
    assert ("Unrelated", "x", None) in rows
    assert ("DTLSServerName", "crm3", None) in rows
    assert not any(r[0] == "HTTPPort" for r in rows)  # nobody set it: no row created
    async with crm_engine.connect() as conn:
        assert await store(tables).read(conn) == new


async def test_invalid_write_changes_nothing(crm_engine: AsyncEngine, tables: CrmTables) -> None:
    await insert_rows(crm_engine, tables, [("ServerNames", "crm1;crm2", None)])
    before = await all_rows(crm_engine, tables)
    with pytest.raises(SysParamsError) as err:
        async with crm_engine.begin() as conn:
            await store(tables).write(conn, {"fq_server_names": ["a.example.com"]})
    assert err.value.field == "fq_server_names"
    assert "2" in err.value.message
    assert await all_rows(crm_engine, tables) == before


async def test_configurable_table_column_and_row_names(engine: AsyncEngine) -> None:
    names = CrmNames(sysparams_table="SysParamsX", parm_name="PName", parm_value="PValue")
    tables = crm_tables(names)
    await create_embedded_crm_tables(engine, tables)
    rows = dict(ROWS, server_names="CRMServers")
    async with engine.begin() as conn:
        await store(tables, rows).write(conn, {"server_names": ["web1", "web2"]})
    async with engine.connect() as conn:
        res = await conn.execute(select(tables.parm("parm_name"), tables.parm("parm_value")))
        assert ("CRMServers", "web1;web2") in [tuple(r) for r in res]
        assert (await store(tables, rows).read(conn)).server_names == ["web1", "web2"]


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"server_names": ["crm1", "crm1"]}, "server_names", "twice"),
        ({"server_names": ["crm1", "CRM1"]}, "server_names", "twice"),
        ({"server_names": ["crm;1"]}, "server_names", "invalid server name"),
        ({"server_names": ["-bad"]}, "server_names", "invalid server name"),
        ({"server_names": ["a", "b"], "fq_server_names": ["a.x"]}, "fq_server_names", "pair up"),
        ({"server_names": ["a"], "fq_server_names": ["bad host!"]}, "fq_server_names", "invalid"),
        ({"server_names": ["a"], "fq_server_names": ["a.example.com:99999"]}, "fq_server_names", "range"),
        ({"server_names": ["a"], "fq_server_names": ["a.example.com:x"]}, "fq_server_names", "port"),
        ({"server_names": ["a"], "dtls_server_name": "b"}, "dtls_server_name", "not one of"),
        ({"http_port": 0}, "http_port", "between 1 and 65535"),
        ({"outlook_port": "abc"}, "outlook_port", "whole number"),
        ({"doc_store": "C:\\Library"}, "doc_store", "UNC"),
        ({"doc_templates": "\\\\?\\C:\\x"}, "doc_templates", "UNC"),
        ({"doc_store": "\\\\srv\\share\\..\\other"}, "doc_store", "UNC"),
        ({"do_load_balancing": "maybe"}, "do_load_balancing", "Y or N"),
    ],
)
def test_rules_give_clear_errors(changes: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(SysParamsError) as err:
        ClusterConfig.checked(**changes)
    assert err.value.field == field
    assert fragment in err.value.message


def test_unknown_setting_refused() -> None:
    with pytest.raises(SysParamsError) as err:
        import asyncio

        async def _go() -> None:
            class _Conn:  # write() refuses before touching the connection
                pass

            await store(crm_tables()).write(_Conn(), {"server_name": ["x"]})  # type: ignore[arg-type]

        asyncio.run(_go())
    assert err.value.field == "server_name"


def test_fq_entries_may_carry_ports_and_addresses_are_reported() -> None:
    cfg = ClusterConfig.checked(server_names=["a", "b"], fq_server_names=["a.example.com:8443", "10.0.0.2"])
    assert cfg.fq_for("a") == "a.example.com:8443"
    assert cfg.ip_addresses_in_fq() == ["10.0.0.2"]  # not allowed with HTTPS: not a certificate name


def test_unc() -> None:
    assert is_unc(r"\\fileserver\crm")
    assert is_unc("\\\\fileserver.corp.local\\crm\\Library\\")
    for bad in [r"\\server", r"C:\x", r"\\?\C:\x", r"\\.\pipe\x", r"\\srv\share\..\x", "//srv/share", ""]:
        assert not is_unc(bad), bad


@pytest.mark.parametrize("raw", ["Y", "y", "1", "True", "true", "yes", "ON"])
def test_lenient_true(raw: str) -> None:
    assert parse_bool(raw) is True


@pytest.mark.parametrize("raw", ["N", "n", "0", "False", "no", "off", "", None])
def test_lenient_false(raw: str | None) -> None:
    assert parse_bool(raw) is False


server_name = st.from_regex(r"\A[A-Za-z0-9](?:[A-Za-z0-9_-]{0,20}[A-Za-z0-9])?\Z")


@given(st.lists(server_name, max_size=8, unique_by=str.lower))
def test_server_list_round_trip(names: list[str]) -> None:
    assert parse_list(format_list(names)) == names
    cfg = ClusterConfig.checked(server_names=names)
    assert ClusterConfig.checked(server_names=parse_list(format_list(cfg.server_names))) == cfg


@given(st.booleans())
def test_bool_round_trip(value: bool) -> None:
    assert parse_bool(format_bool(value)) is value


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters=";"), max_size=10), max_size=6))
def test_parse_list_never_keeps_blank_entries(items: list[str]) -> None:
    parsed = parse_list(";".join(items))
    assert all(p and p == p.strip() for p in parsed)
    assert parsed == [i.strip() for i in items if i.strip()]


async def test_a_real_sage_table_needs_only_name_value_and_deleted(engine: AsyncEngine) -> None:
    """Sage's Custom_SysParams has more columns than ours and its key column is named otherwise:
    reading (and writing) touches only Parm_Name, Parm_Value and Parm_Deleted."""
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(
            text(
                'CREATE TABLE "Custom_SysParams" ("Parm_SysParamsId" INTEGER PRIMARY KEY, '
                '"Parm_Name" VARCHAR(100), "Parm_Value" VARCHAR(400), "Parm_Deleted" CHAR(1), '
                '"Parm_CreatedBy" INTEGER, "Parm_Type" VARCHAR(40), "Parm_Group" VARCHAR(40))'
            )
        )
        await conn.execute(
            text(
                'INSERT INTO "Custom_SysParams" ("Parm_SysParamsId", "Parm_Name", "Parm_Value", '
                "\"Parm_Deleted\", \"Parm_Type\") VALUES (1, 'ServerNames', 'crm1;crm2', NULL, 'S'), "
                "(2, 'DTLSServerName', 'crm1', NULL, 'S'), (3, 'ServerNames', 'old', 'Y', 'S')"
            )
        )
    tables = crm_tables(CrmNames())  # parm_id is "Parm_ParmID": no such column here
    async with engine.connect() as conn:
        cfg = await store(tables).read(conn)
    assert cfg.server_names == ["crm1", "crm2"] and cfg.dtls_server_name == "crm1"


async def test_a_dtls_server_not_among_the_servers_never_stops_a_read(
    crm_engine: AsyncEngine, tables: CrmTables
) -> None:
    """Routing does not use DTLS: a new server list is read even when DTLS names a server that is
    no longer in it; the inconsistency is reported, and a write that fixes neither is refused."""
    await insert_rows(
        crm_engine, tables, [("ServerNames", "crm2;crm3", None), ("DTLSServerName", "crm1", None)]
    )
    async with crm_engine.connect() as conn:
        cfg = await store(tables).read(conn)
    assert cfg.server_names == ["crm2", "crm3"]
    assert cfg.problems() == [("dtls_server_name", "DTLSServerName 'crm1' is not one of ServerNames")]
    async with crm_engine.begin() as conn:
        assert (await store(tables).write(conn, {"http_port": 8443})).http_port == 8443
        with pytest.raises(SysParamsError, match="not one of"):
            await store(tables).write(conn, {"server_names": ["crm2", "crm4"]})
