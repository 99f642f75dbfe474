"""The guide's prerequisites, judged per server from what its agent read (``check_prerequisites``).

Each check quotes its rule and carries the command that read its value:

====================== ======= =================================================================
check                  fails?  the guide
====================== ======= =================================================================
iis_role_services      fail    "IIS is installed as a Server Role ... ASP, ISAPI Extensions, and
                               ISAPI Filters are selected"
asp_parent_paths       fail    "ASP (set Enable Parent Paths to True)"
other_sites            warn    stopping IIS (the upgrade's freeze, ``iisreset``) stops every
                               website on that IIS, not only Sage CRM's
sql_tcp_ip             fail    "Enable TCP/IP for SQL Server installations" (database server)
collation              fail    "The SQL server must have a case insensitive collation. Binary or
                               case-sensitive collations are not supported." (database server)
memory                 warn    "The web servers should have at least 8 gigabytes of memory."
database_memory        warn    "no less than the anticipated database size after one year plus
                               1 gigabyte" (SQL Server's machine; the size now is what can be
                               read: ``crmcluster advise --growth`` plans the year)
free_disk              fail    room for the upgrade's backups (at least 1 GiB free)
====================== ======= =================================================================

A reading the agent could not take is a ``warn`` naming why. Memory rules are ``warn``: the
guide writes "should". :func:`part` turns the checks of every server into one report (the
preflight's ``prerequisites`` finding and the audit's ``prerequisites`` part); nothing here calls
an agent (:mod:`controller.cluster_ops.cluster_audit` and the preflight do).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from config.sizing import RULES, WEB_SERVER_MEMORY_GB, database_server_memory_gb
from node_agent.protocol import IIS_ROLE_SERVICES, OperationRecord, PrerequisitesResult

Status = Literal["pass", "warn", "fail"]
GB = 1 << 30
#: Free disk each server needs (the preflight's backup_space uses the same floor).
MIN_FREE_BYTES = 1 << 30
ROLE_SERVICE_NAMES = {
    "Web-ASP": "ASP",
    "Web-ISAPI-Ext": "ISAPI Extensions",
    "Web-ISAPI-Filter": "ISAPI Filters",
}
GUIDE = {
    "iis_role_services": "You must ensure IIS is installed as a Server Role on the Sage CRM server and that "
    "ASP, ISAPI Extensions, and ISAPI Filters are selected.",
    "asp_parent_paths": "Application Development | ASP (set Enable Parent Paths to True)",
    "other_sites": "Stopping IIS stops every website it serves, not only Sage CRM's.",
    "sql_tcp_ip": "Enable TCP/IP for SQL Server installations.",
    "collation": "The SQL server must have a case insensitive collation. Binary or case-sensitive "
    "collations are not supported.",
    "memory": RULES["web_memory"],
    "database_memory": RULES["database_memory"],
    "free_disk": "Ensure the location ... has sufficient storage space.",
}
_ORDER = {"fail": 2, "warn": 1, "pass": 0}


@dataclass(frozen=True)
class Check:
    check: str
    status: Status
    message: str
    value: Any
    command: str | None
    guide: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def worst(statuses: list[str]) -> Status:
    best: Status = "pass"
    for s in statuses:
        if _ORDER.get(s, 1) > _ORDER[best]:
            best = "fail" if s == "fail" else "warn"
    return best


def case_insensitive(collation: str) -> bool:
    """``Latin1_General_CI_AS``, ``SQL_Latin1_General_CP1_CI_AS``: yes; ``_CS_``, ``_BIN``/``_BIN2``: no."""
    parts = collation.upper().split("_")
    return "CI" in parts and not any(p.startswith("BIN") for p in parts)


def _gb(n: int | float) -> str:
    return f"{n / GB:.1f} GB"


def judge(r: PrerequisitesResult) -> list[Check]:
    """The checks of one server from its agent's readings."""
    out: list[Check] = []

    def add(name: str, status: Status, message: str, value: Any, source: str) -> None:
        out.append(Check(name, status, message, value, r.sources.get(source), GUIDE[name]))

    def unread(name: str, source: str, what: str) -> None:
        add(name, "warn", f"could not read {what}: {r.errors.get(source, 'not reported')}", None, source)

    if r.role_services is None:
        unread("iis_role_services", "role_services", "IIS's role services")
    else:
        missing = [ROLE_SERVICE_NAMES[f] for f in IIS_ROLE_SERVICES if not r.role_services.get(f)]
        if missing:
            add(
                "iis_role_services",
                "fail",
                f"IIS lacks the role service{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                r.role_services,
                "role_services",
            )
        else:
            add(
                "iis_role_services",
                "pass",
                "ASP, ISAPI Extensions and ISAPI Filters are installed",
                r.role_services,
                "role_services",
            )

    if r.parent_paths is None:
        unread("asp_parent_paths", "parent_paths", "ASP's Enable Parent Paths")
    elif r.parent_paths:
        add("asp_parent_paths", "pass", "ASP's Enable Parent Paths is True", True, "parent_paths")
    else:
        add(
            "asp_parent_paths",
            "fail",
            "ASP's Enable Parent Paths is False: set it to True",
            False,
            "parent_paths",
        )

    if r.sites is None:
        unread("other_sites", "sites", "IIS's websites")
    else:
        others = [s for s in r.sites if s.lower() != r.crm_site.lower()]
        if others:
            add(
                "other_sites",
                "warn",
                f"stopping IIS also takes down {', '.join(others)} (on the same IIS as {r.crm_site})",
                others,
                "sites",
            )
        else:
            add("other_sites", "pass", f"no website but {r.crm_site} on this IIS", [], "sites")

    if r.database_server:
        if r.sql_tcp_enabled is None:
            unread("sql_tcp_ip", "sql_tcp_enabled", "SQL Server's TCP/IP setting")
        elif r.sql_tcp_enabled:
            add("sql_tcp_ip", "pass", "SQL Server's TCP/IP protocol is enabled", True, "sql_tcp_enabled")
        else:
            add(
                "sql_tcp_ip",
                "fail",
                "SQL Server's TCP/IP protocol is disabled (enable it in SQL Server Configuration Manager)",
                False,
                "sql_tcp_enabled",
            )
        if r.server_collation is None:
            unread("collation", "collation", "SQL Server's collation")
        else:
            value = {"server": r.server_collation, "database": r.database_collation}
            bad = [c for c in (r.server_collation, r.database_collation) if c and not case_insensitive(c)]
            if bad:
                add(
                    "collation",
                    "fail",
                    f"collation {', '.join(sorted(set(bad)))} is not case-insensitive",
                    value,
                    "collation",
                )
            else:
                add(
                    "collation",
                    "pass",
                    f"case-insensitive collation {r.database_collation or r.server_collation}",
                    value,
                    "collation",
                )
        if r.sql_memory_bytes is None or r.database_bytes is None:
            unread("database_memory", "sql_memory", "SQL Server's memory and the database size")
        else:
            need = database_server_memory_gb(r.database_bytes / GB) * GB
            sizes = {
                "memory_bytes": r.sql_memory_bytes,
                "database_bytes": r.database_bytes,
                "needed_bytes": int(need),
            }
            text = (
                f"SQL Server's machine has {_gb(r.sql_memory_bytes)}; "
                f"the database is {_gb(r.database_bytes)} now, so at least {_gb(need)} "
                "(plan for its size after a year: crmcluster advise)"
            )
            add(
                "database_memory", "pass" if r.sql_memory_bytes >= need else "warn", text, sizes, "sql_memory"
            )

    if r.memory_bytes is None:
        unread("memory", "memory", "the memory")
    else:
        need_web = WEB_SERVER_MEMORY_GB * GB
        add(
            "memory",
            "pass" if r.memory_bytes >= need_web else "warn",
            f"{_gb(r.memory_bytes)} of memory; the guide asks at least {WEB_SERVER_MEMORY_GB:g} GB",
            {"memory_bytes": r.memory_bytes, "needed_bytes": int(need_web)},
            "memory",
        )

    if r.free_disk_bytes is None:
        unread("free_disk", "free_disk", "the free disk")
    else:
        add(
            "free_disk",
            "pass" if r.free_disk_bytes >= MIN_FREE_BYTES else "fail",
            f"{_gb(r.free_disk_bytes)} free; the upgrade's backups need at least {_gb(MIN_FREE_BYTES)}",
            {"free_bytes": r.free_disk_bytes, "needed_bytes": MIN_FREE_BYTES},
            "free_disk",
        )
    return out


def node_report(result: OperationRecord | str) -> dict[str, Any]:
    """One server's checks, or the reason none could be made (a ``warn``)."""
    if isinstance(result, str):
        check = Check("agent", "warn", f"could not check the prerequisites: {result}", None, None, "")
        return {"status": "warn", "checks": [check.as_json()]}
    checks = judge(result.result_as(PrerequisitesResult))
    return {"status": worst([c.status for c in checks]), "checks": [c.as_json() for c in checks]}


def part(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every server's report as one part: its status, a one-line message, the servers' checks."""
    status = worst([r["status"] for r in reports.values()]) if reports else "warn"
    problems = [
        f"{name}: {c['message']}"
        for name, rep in sorted(reports.items())
        for c in rep["checks"]
        if c["status"] != "pass"
    ]
    if not reports:
        message = "no server with an agent to check"
    elif problems:
        message = "; ".join(problems)
    else:
        message = f"every prerequisite the guide names is met on {len(reports)} servers"
    return {"status": status, "message": message, "nodes": reports}
