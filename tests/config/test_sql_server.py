"""The SQL Server code path through the real driver stack (pyodbc + unixODBC + FreeTDS here,
Microsoft's ODBC Driver 18 in production): connection strings reach the driver, and its errors
are mapped to ours. No SQL Server runs on this machine, so the connection target is a closed port."""

from __future__ import annotations

import socket

import pytest

from config.database import make_engine, unavailable_errors
from config.errors import DatabaseUnavailable

pyodbc = pytest.importorskip("pyodbc", reason="pyodbc needs unixODBC (Debian unixodbc)")


def _freetds_installed() -> bool:
    return any("FreeTDS" in d for d in pyodbc.drivers())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not _freetds_installed(), reason="FreeTDS ODBC driver (Debian tdsodbc) not installed")
async def test_unreachable_sql_server_is_database_unavailable() -> None:
    port = _closed_port()
    engine = make_engine(
        f"mssql+aioodbc://crm:pw@127.0.0.1:{port}/CRM?driver=FreeTDS&TDS_Version=7.4&timeout=2"
    )
    assert engine.dialect.name == "mssql" and engine.dialect.driver == "aioodbc"
    try:
        with pytest.raises(DatabaseUnavailable) as err:
            with unavailable_errors("crm database"):
                async with engine.connect():
                    pass
    finally:
        await engine.dispose()
    assert "crm database unavailable" in str(err.value)
    assert "pw" not in str(err.value)
