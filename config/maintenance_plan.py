"""The guide's "Setting up a database maintenance plan" as data: its table, the schedule each task
runs on, and when a schedule next fires.

The guide's table (a sample plan for SQL Server)::

    Task                                Hourly  Nightly  Weekly  Monthly
    Database consistency check                            X
    Shrink database                                                X*
    Reorganize indexes                           X
    Rebuild indexes                                       X
    Update statistics                            X
    Database backup - Full                                X
    Database backup - Differential               X**
    Database backup - Transaction log    X
    Maintenance clean-up                                  X

    *  Or longer - regularly shrinking a database fragments the drive on which it is running, which
       reduces performance. If the database and transactional log file backups are carried out,
       the Shrink Database task may not be required.
    ** Except the night on which the full database is backed up.

A :class:`Schedule` is written in SQL Server Agent's terms (a job schedule: hourly, daily on some
weekdays, weekly on one day, monthly on one day of the month; a start time), so the Windows driver
creates exactly these jobs with ``msdb.dbo.sp_add_schedule`` and the sandbox's SQL Server Agent
fires them at the same moments (:meth:`Schedule.next_after`). Times are the database server's
clock; the sandbox keeps UTC.

The times of day are crmcluster's choice (the guide names frequencies only), written in
:func:`guide_plan`: the consistency check runs before the weekly full backup (a damaged database is
found before it is backed up), index and statistics work after the backups of the night. Because
this plan carries out both the database and the transaction log backups, the shrink — which the
guide says "may not be required" then — is off unless asked for (``shrink="monthly"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: SQL Server Agent's weekday bits (``@freq_interval`` of a weekly schedule): Sunday 1 … Saturday 64.
AGENT_DAY_BITS: dict[str, int] = {
    "sunday": 1,
    "monday": 2,
    "tuesday": 4,
    "wednesday": 8,
    "thursday": 16,
    "friday": 32,
    "saturday": 64,
}

TaskName = Literal[
    "consistency_check",
    "shrink_database",
    "reorganize_indexes",
    "rebuild_indexes",
    "update_statistics",
    "full_backup",
    "differential_backup",
    "log_backup",
    "cleanup",
]
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class GuideTask:
    """A row of the guide's table."""

    name: TaskName
    label: str  # the guide's words
    column: Literal["Hourly", "Nightly", "Weekly", "Monthly"]
    note: str | None = None


GUIDE_TABLE: tuple[GuideTask, ...] = (
    GuideTask("consistency_check", "Database consistency check", "Weekly"),
    GuideTask(
        "shrink_database",
        "Shrink database",
        "Monthly",
        "Or longer - Regularly shrinking a database fragments the drive on which it is running, which "
        "reduces performance. If the database and transactional log file backups are carried out, the "
        "Shrink Database task may not be required.",
    ),
    GuideTask("reorganize_indexes", "Reorganize indexes", "Nightly"),
    GuideTask("rebuild_indexes", "Rebuild indexes", "Weekly"),
    GuideTask("update_statistics", "Update statistics", "Nightly"),
    GuideTask("full_backup", "Database backup - Full", "Weekly"),
    GuideTask(
        "differential_backup",
        "Database backup - Differential",
        "Nightly",
        "Except the night on which the full database is backed up.",
    ),
    GuideTask("log_backup", "Database backup - Transaction log", "Hourly"),
    GuideTask("cleanup", "Maintenance clean-up", "Weekly"),
)
TASKS: dict[str, GuideTask] = {t.name: t for t in GUIDE_TABLE}
#: Backups, by the kind of restore point they leave (msdb ``backupset.type``: D, I, L).
BACKUP_KINDS: dict[str, str] = {
    "full_backup": "full",
    "differential_backup": "differential",
    "log_backup": "log",
}


class Schedule(BaseModel):
    """When a task runs, as a SQL Server Agent schedule.

    - ``every="hour"``: each hour at minute ``at[3:]`` (``at="00:15"`` → 00:15, 01:15 …);
    - ``every="day"``: at ``at`` on ``days`` (default every day);
    - ``every="week"``: at ``at`` on the one day in ``days``;
    - ``every="month"``: at ``at`` on ``day_of_month`` (1-28, so every month has it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: Literal["hour", "day", "week", "month"]
    at: str = "00:00"
    days: tuple[Weekday, ...] | None = None
    day_of_month: Annotated[int, Field(ge=1, le=28)] | None = None

    @field_validator("at")
    @classmethod
    def _time(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError("a time of day as HH:MM (24-hour)")
        return v

    @model_validator(mode="after")
    def _shape(self) -> Schedule:
        if self.every == "week" and (not self.days or len(self.days) != 1):
            raise ValueError("a weekly schedule names exactly one day")
        if self.every == "month" and self.day_of_month is None:
            raise ValueError("a monthly schedule names its day_of_month")
        if self.every in ("hour", "month") and self.days is not None:
            raise ValueError(f"an {self.every}ly schedule takes no days")
        if self.days is not None and len(set(self.days)) != len(self.days):
            raise ValueError("days repeat")
        return self

    @property
    def hour(self) -> int:
        return int(self.at[:2])

    @property
    def minute(self) -> int:
        return int(self.at[3:])

    def runs_on(self, day: datetime) -> bool:
        """True when a daily/weekly schedule fires on ``day``'s weekday (always for the others)."""
        if self.days is None:
            return True
        return WEEKDAYS[day.weekday()] in self.days

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after ``moment`` (aware; naive is read as UTC) this fires."""
        t = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        base = t.replace(second=0, microsecond=0)
        if self.every == "hour":
            candidate = base.replace(minute=self.minute)
            while candidate <= t:
                candidate += timedelta(hours=1)
            return candidate
        day = base.replace(hour=self.hour, minute=self.minute)
        for _ in range(400):
            if day > t and self._fires_on(day):
                return day
            day = _next_day(day)
        raise AssertionError("a valid schedule fires within 400 days")  # pragma: no cover

    def _fires_on(self, day: datetime) -> bool:
        if self.every == "month":
            return day.day == self.day_of_month
        return self.runs_on(day)

    def describe(self) -> str:
        """In words, e.g. ``every night at 01:00 except sunday``."""
        if self.every == "hour":
            return f"every hour at :{self.at[3:]}"
        if self.every == "month":
            return f"monthly on day {self.day_of_month} at {self.at}"
        if self.every == "week":
            return f"weekly on {self.days[0] if self.days else '?'} at {self.at}"
        if self.days is None or len(self.days) == 7:
            return f"every night at {self.at}"
        missing = [d for d in WEEKDAYS if d not in self.days]
        if len(missing) <= 3:
            return f"every night at {self.at} except {', '.join(missing)}"
        return f"at {self.at} on {', '.join(self.days)}"


def _next_day(day: datetime) -> datetime:
    return (day + timedelta(days=1)).replace(hour=day.hour, minute=day.minute)


class PlanOptions(BaseModel):
    """What an administrator may choose about the guide's plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The night of the weekly full backup (and of the other weekly tasks).
    full_backup_day: Weekday = "sunday"
    #: ``monthly`` as in the guide's table, or ``never`` (the guide's note: not required when the
    #: database and log backups are carried out — which this plan does).
    shrink: Literal["monthly", "never"] = "never"
    #: Backup files and history older than this are removed by the weekly clean-up.
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 28


def guide_plan(options: PlanOptions | None = None) -> dict[str, Schedule]:
    """The guide's table as schedules, in its order (without the shrink when ``shrink="never"``)."""
    o = options or PlanOptions()
    weekly = (o.full_backup_day,)
    other_nights = tuple(d for d in WEEKDAYS if d != o.full_backup_day)
    plan: dict[str, Schedule] = {
        "consistency_check": Schedule(every="week", at="00:30", days=weekly),
        "shrink_database": Schedule(every="month", at="05:00", day_of_month=1),
        "reorganize_indexes": Schedule(every="day", at="02:00"),
        "rebuild_indexes": Schedule(every="week", at="03:00", days=weekly),
        "update_statistics": Schedule(every="day", at="02:30"),
        "full_backup": Schedule(every="week", at="01:00", days=weekly),
        "differential_backup": Schedule(every="day", at="01:00", days=other_nights),
        "log_backup": Schedule(every="hour", at="00:15"),
        "cleanup": Schedule(every="week", at="04:00", days=weekly),
    }
    if o.shrink == "never":
        del plan["shrink_database"]
    return plan


def job_name(database: str, task: str) -> str:
    """The SQL Server Agent job of a task: ``crmcluster maintenance: CRM full_backup``."""
    return f"{JOB_PREFIX}{database} {task}"


JOB_PREFIX = "crmcluster maintenance: "
