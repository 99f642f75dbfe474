"""The guide's "Server hardware recommendations", applied to what a customer expects.

    advice = advise(users=120, call_center=True, db_size_gb=3, growth_gb_per_year=2)
    advice.row.users          # "Over 50"
    advice.machines           # database server and web server, each with its memory and processors
    advice.reasons            # each rule of the guide quoted, with what it gives here

Every figure comes from a sentence of the guide, quoted in :data:`RULES`; nothing is invented:

- the hardware table's row by number of users — under 50: one machine *if the database is under
  2 GB*; over 50: database and web server split over two machines; over 200 (and several
  hundred): consider multi-server Sage CRM;
- database server memory no less than the database size after one year plus 1 GB, and 64-bit
  database software on Windows 2008 R2 or later once that rule gives 4 GB or more;
- web servers with at least 8 GB; Quick Find uses up to 1 GB more;
- software that shares a machine adds its requirements (the guide's opening sentence), so one
  machine holding both servers needs the sum.

The table is written "for call center users on a non-customized system": ``call_center=False``
keeps the row (the guide gives no other figures) and says the row errs on the generous side.

Where the guide is silent this module says what it chose: "under 50" is fewer than 50 users,
"over 50" is 50 to 200, "over 200" is 201 to 299 and "several hundred" 300 or more; the memory
to *plan on* is the smallest usual server memory size at or above the minimum (the guide's own
example: 6 GB after a year gives 7 GB, "plan on a server with at least 8 gigabytes").

The controller's prerequisites check (memory of each server against the rule) uses
:func:`database_server_memory_gb` and :data:`WEB_SERVER_MEMORY_GB` from here, so the rule is
written once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

#: The guide's sentences, by the rule they carry (quoted in every piece of advice).
RULES: dict[str, str] = {
    "table": "The guidelines in the table below are for call center users on a non-customized system.",
    "call_center": (
        "Consider the type of user working with the system. For example, 200 call center users use "
        "the system more intensively than 200 sales and marketing users."
    ),
    "under_50": (
        "Under 50: You can keep the web server and database server on the same machine if the "
        "database size is less than 2 gigabytes."
    ),
    "over_50": "Over 50: Split the database server and web server across two machines.",
    "over_200": "Over 200: Consider multi-server Sage CRM.",
    "several_hundred": "Several hundred: Consider multi-server Sage CRM.",
    "database_memory": (
        "Database server memory size is critical to performance and should be no less than the "
        "anticipated database size after one year plus 1 gigabyte."
    ),
    "64_bit": (
        "If this rule of thumb indicates a server with 4 or more gigabytes of memory, you should "
        "deploy Windows 2008 R2 or above with 64-bit database software."
    ),
    "web_memory": "The web servers should have at least 8 gigabytes of memory.",
    "quick_find": (
        "Quick Find uses up to 1 gigabyte of RAM. The exact amount of RAM used depends on the number "
        "of records that are indexed."
    ),
    "shared_machine": (
        "Where a customer installation of Sage CRM is running additional software or web applications, "
        "add the requirements of that software to the Sage CRM recommendations."
    ),
    "disks": (
        "For the web server, use disk mirroring (RAID 1). For the database server, use a RAID 10 disk "
        "array system ... For larger sites, use a fiber channel SAN."
    ),
    "customizations": (
        "Evaluate customizations when specifying hardware as they can significantly impact the "
        "performance of Sage CRM."
    ),
    "test_servers": "Set up one or more test servers.",
    "sql_express": (
        "Use SQL Express editions for demo installations of Sage CRM only. They are not recommended "
        "for production environments because of database size restrictions."
    ),
}

#: "The web servers should have at least 8 gigabytes of memory."
WEB_SERVER_MEMORY_GB = 8.0
#: "Quick Find uses up to 1 gigabyte of RAM."
QUICK_FIND_MEMORY_GB = 1.0
#: "... if the database size is less than 2 gigabytes" (the under-50 row's condition).
ONE_MACHINE_DATABASE_LIMIT_GB = 2.0
#: "If this rule of thumb indicates a server with 4 or more gigabytes ... 64-bit database software."
SIXTY_FOUR_BIT_FROM_GB = 4.0
#: Usual server memory sizes, to turn a minimum into a size to plan on (our choice; see above).
MEMORY_SIZES_GB: tuple[int, ...] = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

Layout = Literal["single_machine", "split", "multi_server"]


@dataclass(frozen=True)
class TableRow:
    """One row of the guide's hardware table."""

    users: str  # the guide's "Number of users" cell
    servers: str  # its "Servers" cell
    processors: str  # its "Processors" cell
    rule: str  # key into RULES


TABLE: tuple[TableRow, ...] = (
    TableRow(
        "Under 50",
        "You can keep the web server and database server on the same machine if the database size is "
        "less than 2 gigabytes.",
        "The machine should have two quad-core processors. The processors do not need to be high "
        "specification.",
        "under_50",
    ),
    TableRow(
        "Over 50",
        "Split the database server and web server across two machines.",
        "The machines should have two eight-core processors. Consider higher specification processors "
        "to allow for growth in user numbers.",
        "over_50",
    ),
    TableRow(
        "Over 200",
        "Consider multi-server Sage CRM.",
        "The processors in each machine must be high specification.",
        "over_200",
    ),
    TableRow(
        "Several hundred",
        "Consider multi-server Sage CRM.",
        "The processors in each machine must be high specification.",
        "several_hundred",
    ),
)


@dataclass(frozen=True)
class Machine:
    """A machine to provision: what it runs, how many, its memory and processors."""

    role: str
    count: str
    memory_gb_min: float
    memory_gb_plan: int
    processors: str
    disks: str
    software: str | None = None


@dataclass(frozen=True)
class Reason:
    """A rule of the guide (quoted) and what it gives for these figures."""

    rule: str
    guide: str
    finding: str


@dataclass(frozen=True)
class SizingAdvice:
    users: int
    call_center: bool
    db_size_gb: float
    growth_gb_per_year: float
    db_size_after_year_gb: float
    row: TableRow
    layout: Layout
    summary: str
    machines: tuple[Machine, ...]
    reasons: tuple[Reason, ...]
    notes: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def table_row(users: int) -> TableRow:
    """The hardware table's row for a number of users (bounds as chosen in the module docstring)."""
    if users < 50:
        return TABLE[0]
    if users <= 200:
        return TABLE[1]
    if users < 300:
        return TABLE[2]
    return TABLE[3]


def database_server_memory_gb(db_size_after_year_gb: float) -> float:
    """The guide's minimum: the database size after one year plus 1 GB."""
    return db_size_after_year_gb + 1.0


def needs_64_bit(memory_gb: float) -> bool:
    return memory_gb >= SIXTY_FOUR_BIT_FROM_GB


def plan_memory_gb(minimum_gb: float) -> int:
    """The smallest usual memory size at or above ``minimum_gb`` (7 GB → 8, as the guide's example)."""
    for size in MEMORY_SIZES_GB:
        if size >= minimum_gb - 1e-9:
            return size
    return int(math.ceil(minimum_gb / 256.0) * 256)


def _gb(value: float) -> str:
    return f"{value:g} GB"


def advise(*, users: int, call_center: bool, db_size_gb: float, growth_gb_per_year: float) -> SizingAdvice:
    """The guide's recommendation for ``users`` users and a database of ``db_size_gb`` growing by
    ``growth_gb_per_year``. Raises :class:`ValueError` for figures that cannot be (no users,
    negative sizes)."""
    if users < 1:
        raise ValueError("users: at least 1")
    if db_size_gb < 0 or not math.isfinite(db_size_gb):
        raise ValueError("db_size_gb: a size in GB, 0 or more")
    if growth_gb_per_year < 0 or not math.isfinite(growth_gb_per_year):
        raise ValueError("growth_gb_per_year: GB per year, 0 or more")

    after_year = round(db_size_gb + growth_gb_per_year, 3)
    row = table_row(users)
    reasons: list[Reason] = []
    notes: list[str] = []

    if call_center:
        reasons.append(
            Reason("table", RULES["table"], "Your users are call center users: the table applies as written.")
        )
    else:
        reasons.append(
            Reason(
                "table",
                RULES["table"] + " " + RULES["call_center"],
                "Your users are not call center users: they use the system less intensively than the "
                "table assumes, so its row errs on the generous side.",
            )
        )

    db_min = database_server_memory_gb(after_year)
    db_64 = needs_64_bit(db_min)
    reasons.append(
        Reason(
            "database_memory",
            RULES["database_memory"],
            f"{_gb(db_size_gb)} now + {_gb(growth_gb_per_year)} a year = {_gb(after_year)} after one year; "
            f"+ 1 GB = at least {_gb(db_min)} for the database server "
            f"(plan on {plan_memory_gb(db_min)} GB).",
        )
    )
    reasons.append(
        Reason(
            "64_bit",
            RULES["64_bit"],
            f"{_gb(db_min)} is 4 GB or more: Windows Server 2008 R2 or later with 64-bit SQL Server."
            if db_64
            else f"{_gb(db_min)} is under 4 GB: 32-bit database software would do, 64-bit is not required.",
        )
    )
    reasons.append(
        Reason(
            "web_memory",
            RULES["web_memory"],
            f"Each web server: at least {_gb(WEB_SERVER_MEMORY_GB)}.",
        )
    )
    sql_software = "64-bit SQL Server, Windows Server 2008 R2+" if db_64 else "SQL Server"

    layout: Layout
    machines: list[Machine]
    if row.rule == "under_50" and db_size_gb < ONE_MACHINE_DATABASE_LIMIT_GB:
        layout = "single_machine"
        total = db_min + WEB_SERVER_MEMORY_GB + QUICK_FIND_MEMORY_GB
        machines = [
            Machine(
                role="web and database server",
                count="1",
                memory_gb_min=total,
                memory_gb_plan=plan_memory_gb(total),
                processors=row.processors,
                disks="RAID 10",
                software=sql_software,
            )
        ]
        summary = (
            f"One machine for the web server and the database server: {users} users is under 50 and the "
            f"database ({_gb(db_size_gb)}) is under 2 GB."
        )
        reasons.insert(1, Reason(row.rule, RULES[row.rule], summary))
        reasons.append(
            Reason(
                "quick_find",
                RULES["quick_find"],
                "The one machine runs the Indexer service (Quick Find) too: "
                f"up to {_gb(QUICK_FIND_MEMORY_GB)} more.",
            )
        )
        reasons.append(
            Reason(
                "shared_machine",
                RULES["shared_machine"],
                f"Both servers on one machine add up: {_gb(db_min)} (database) + {_gb(WEB_SERVER_MEMORY_GB)} "
                f"(web server) + {_gb(QUICK_FIND_MEMORY_GB)} (Quick Find) = at least {_gb(total)}.",
            )
        )
        if after_year >= ONE_MACHINE_DATABASE_LIMIT_GB:
            notes.append(
                f"The database reaches {_gb(after_year)} within a year: past 2 GB the guide no longer keeps "
                "both servers on one machine, so plan the split."
            )
    else:
        web_min = WEB_SERVER_MEMORY_GB + QUICK_FIND_MEMORY_GB
        processors = row.processors
        large = row.rule in ("over_200", "several_hundred")
        database = Machine(
            role="database server",
            count="1",
            memory_gb_min=db_min,
            memory_gb_plan=plan_memory_gb(db_min),
            processors=processors,
            disks="RAID 10; a fiber channel SAN for a site this size" if large else "RAID 10",
            software=sql_software,
        )
        if not large:
            layout = "split"
            machines = [
                database,
                Machine(
                    role="web server (with the Indexer)",
                    count="1",
                    memory_gb_min=web_min,
                    memory_gb_plan=plan_memory_gb(web_min),
                    processors=processors,
                    disks="RAID 1",
                ),
            ]
            if row.rule == "under_50":
                summary = (
                    f"Two machines, database server and web server: {users} users is under 50, but the "
                    f"database ({_gb(db_size_gb)}) is not under 2 GB, so the one-machine row does not apply."
                )
            else:
                summary = f"Two machines, database server and web server: {users} users is over 50."
        else:
            layout = "multi_server"
            machines = [
                database,
                Machine(
                    role="web server (with the Indexer)",
                    count="1",
                    memory_gb_min=web_min,
                    memory_gb_plan=plan_memory_gb(web_min),
                    processors=processors,
                    disks="RAID 1",
                ),
                Machine(
                    role="more web servers",
                    count="1 or more",
                    memory_gb_min=WEB_SERVER_MEMORY_GB,
                    memory_gb_plan=plan_memory_gb(WEB_SERVER_MEMORY_GB),
                    processors=processors,
                    disks="RAID 1",
                ),
            ]
            summary = (
                f"Multi-server Sage CRM: {users} users is {row.users.lower()}; a database server and "
                "several web servers behind the login balancer."
            )
        reasons.insert(1, Reason(row.rule, RULES[row.rule], summary))
        reasons.append(
            Reason(
                "quick_find",
                RULES["quick_find"],
                f"The web server running the Indexer service (Quick Find): {_gb(WEB_SERVER_MEMORY_GB)} + "
                f"{_gb(QUICK_FIND_MEMORY_GB)} = at least {_gb(web_min)}.",
            )
        )
    reasons.append(Reason("disks", RULES["disks"], "; ".join(f"{m.role}: {m.disks}" for m in machines)))
    notes.append(RULES["customizations"])
    notes.append(RULES["test_servers"])
    notes.append(RULES["sql_express"])
    return SizingAdvice(
        users=users,
        call_center=call_center,
        db_size_gb=db_size_gb,
        growth_gb_per_year=growth_gb_per_year,
        db_size_after_year_gb=after_year,
        row=row,
        layout=layout,
        summary=summary,
        machines=tuple(machines),
        reasons=tuple(reasons),
        notes=tuple(notes),
    )
