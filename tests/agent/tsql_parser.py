"""A real T-SQL parser for the windows driver's statements: sqlfluff's ``tsql`` dialect.

sqlfluff's tsql grammar (4.x) parses ``RESTORE DATABASE``, ``ALTER DATABASE … SET``, ``EXEC``,
``SELECT`` and ``DISABLE|ENABLE TRIGGER``, but has no ``BACKUP DATABASE`` and no ``RESTORE
VERIFYONLY``; sqlglot's parses neither and reads ``ALTER DATABASE`` as an opaque command. So the
dialect is extended here with those two statements, written from Microsoft's documented syntax
(BACKUP (Transact-SQL), RESTORE VERIFYONLY) for the options the driver uses, and nothing looser:
an option the documentation does not list makes the statement unparsable.

``?`` parameters are replaced by string literals before parsing (sqlfluff's tsql has no ``?``).
"""

from __future__ import annotations

import re
from typing import Any, cast

from sqlfluff.core import FluffConfig, Linter
from sqlfluff.core.dialects import load_raw_dialect
from sqlfluff.core.parser import BaseSegment, Delimited, OneOf, Ref, Sequence

from node_agent.drivers.windows.tsql import Statement

_tsql = load_raw_dialect("tsql")  # every segment registered, not yet expanded
_dialect = _tsql.copy_as("tsql", formatted_name="T-SQL (crmcluster)")

_device = Sequence("DISK", Ref("EqualsSegment"), Ref("QuotedLiteralSegment"))


class BackupDatabaseStatementSegment(BaseSegment):
    """``BACKUP DATABASE name TO DISK = '…' [WITH COPY_ONLY | CHECKSUM | INIT | FORMAT | NAME = '…'
    | STATS [= n] …]`` (Microsoft: "BACKUP (Transact-SQL)")."""

    type = "backup_database_statement"
    match_grammar = Sequence(
        "BACKUP",
        "DATABASE",
        Ref("DatabaseReferenceSegment"),
        "TO",
        Delimited(_device),
        Sequence(
            "WITH",
            Delimited(
                OneOf(
                    "COPY_ONLY",
                    "CHECKSUM",
                    "NO_CHECKSUM",
                    "INIT",
                    "NOINIT",
                    "FORMAT",
                    "NOFORMAT",
                    "COMPRESSION",
                    "CONTINUE_AFTER_ERROR",
                    Sequence("NAME", Ref("EqualsSegment"), Ref("QuotedLiteralSegment")),
                    Sequence(
                        "STATS", Sequence(Ref("EqualsSegment"), Ref("NumericLiteralSegment"), optional=True)
                    ),
                )
            ),
            optional=True,
        ),
    )


class RestoreVerifyOnlyStatementSegment(BaseSegment):
    """``RESTORE VERIFYONLY FROM DISK = '…' [WITH CHECKSUM | NO_CHECKSUM | STATS]``."""

    type = "restore_verifyonly_statement"
    match_grammar = Sequence(
        "RESTORE",
        OneOf("VERIFYONLY", "HEADERONLY"),
        "FROM",
        Delimited(_device),
        Sequence("WITH", Delimited(OneOf("CHECKSUM", "NO_CHECKSUM", "STATS")), optional=True),
    )


_KEYWORDS = [
    "BACKUP",
    "DATABASE",
    "DISK",
    "COPY_ONLY",
    "CHECKSUM",
    "NO_CHECKSUM",
    "INIT",
    "NOINIT",
    "FORMAT",
    "NOFORMAT",
    "COMPRESSION",
    "CONTINUE_AFTER_ERROR",
    "NAME",
    "STATS",
    "VERIFYONLY",
    "HEADERONLY",
]
_reserved = _dialect.sets("reserved_keywords")
_dialect.sets("unreserved_keywords").update(k for k in _KEYWORDS if k not in _reserved)
_dialect.add(
    BackupDatabaseStatementSegment=BackupDatabaseStatementSegment,
    RestoreVerifyOnlyStatementSegment=RestoreVerifyOnlyStatementSegment,
)
_dialect.replace(
    StatementSegment=cast(
        Any,
        type(
            "StatementSegment",
            (_tsql.get_segment("StatementSegment"),),
            {
                "match_grammar": _tsql.get_segment("StatementSegment").match_grammar.copy(
                    insert=[Ref("BackupDatabaseStatementSegment"), Ref("RestoreVerifyOnlyStatementSegment")]
                )
            },
        ),
    )
)


def _config() -> FluffConfig:
    cfg = FluffConfig(overrides={"dialect": "tsql"})
    cfg._configs["core"]["dialect_obj"] = _dialect.expand()  # the extended dialect, by object
    return cfg


_LINTER = Linter(config=_config())


def inline(st: Statement) -> str:
    """The statement with each ``?`` replaced by its parameter as a string literal."""
    values = iter(st.params)

    def lit(_: re.Match[str]) -> str:
        v: Any = next(values)
        return str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'"

    return re.sub(r"\?", lit, st.text)


def parse(sql: str) -> str:
    """The parse tree's top statement type; AssertionError with the unparsable part otherwise."""
    parsed = _LINTER.parse_string(sql)
    problems = [str(v) for v in parsed.violations]
    tree = parsed.tree
    assert tree is not None and not problems, f"not T-SQL: {sql}\n{problems}"
    text = tree.stringify()
    assert "unparsable" not in text, f"not T-SQL: {sql}\n{text}"
    stmt = next(tree.recursive_crawl("statement"))
    return str(stmt.segments[0].type)
