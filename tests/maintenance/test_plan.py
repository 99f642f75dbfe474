"""The guide's maintenance table as schedules: what runs when, in SQL Server Agent's terms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from config.maintenance_plan import GUIDE_TABLE, PlanOptions, Schedule, guide_plan
from node_agent.drivers.windows_maintenance import agent_schedule, schedule_from_agent


def test_the_plan_has_each_row_of_the_guides_table_at_its_frequency() -> None:
    plan = guide_plan(PlanOptions(shrink="monthly"))
    assert [t.name for t in GUIDE_TABLE] == list(plan)
    every = {"Hourly": "hour", "Nightly": "day", "Weekly": "week", "Monthly": "month"}
    for row in GUIDE_TABLE:
        assert plan[row.name].every == every[row.column], row.name
    # ** Except the night on which the full database is backed up.
    assert plan["full_backup"].days == ("sunday",)
    assert "sunday" not in (plan["differential_backup"].days or ())
    assert len(plan["differential_backup"].days or ()) == 6
    # the shrink is left out unless asked for (the guide's note: not required with these backups)
    assert "shrink_database" not in guide_plan()
    moved = guide_plan(PlanOptions(full_backup_day="saturday"))
    assert moved["full_backup"].days == ("saturday",) and "saturday" not in (
        moved["differential_backup"].days or ()
    )


def test_nothing_heavy_overlaps_the_full_backup_night() -> None:
    plan = guide_plan()
    sunday = datetime(2026, 12, 5, 23, 59, tzinfo=UTC)  # Saturday 23:59
    firsts = {t: s.next_after(sunday) for t, s in plan.items()}
    assert firsts["consistency_check"] < firsts["full_backup"] < firsts["rebuild_indexes"] < firsts["cleanup"]
    assert firsts["differential_backup"].weekday() == 0  # Monday: not the full's night


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        (
            Schedule(every="hour", at="00:15"),
            datetime(2026, 1, 1, 10, 15, tzinfo=UTC),
            datetime(2026, 1, 1, 11, 15, tzinfo=UTC),
        ),
        (
            Schedule(every="hour", at="00:15"),
            datetime(2026, 1, 1, 23, 50, tzinfo=UTC),
            datetime(2026, 1, 2, 0, 15, tzinfo=UTC),
        ),
        (
            Schedule(every="day", at="01:00"),
            datetime(2026, 1, 1, 0, 59, tzinfo=UTC),
            datetime(2026, 1, 1, 1, 0, tzinfo=UTC),
        ),
        (
            Schedule(every="week", at="01:00", days=("sunday",)),
            datetime(2026, 1, 4, 1, 0, tzinfo=UTC),
            datetime(2026, 1, 11, 1, 0, tzinfo=UTC),
        ),
        (
            Schedule(every="month", at="05:00", day_of_month=1),
            datetime(2026, 1, 31, 6, 0, tzinfo=UTC),
            datetime(2026, 2, 1, 5, 0, tzinfo=UTC),
        ),
        (
            Schedule(every="month", at="05:00", day_of_month=1),
            datetime(2026, 12, 1, 5, 0, tzinfo=UTC),
            datetime(2027, 1, 1, 5, 0, tzinfo=UTC),
        ),
    ],
)
def test_next_run(schedule: Schedule, after: datetime, expected: datetime) -> None:
    assert schedule.next_after(after) == expected
    assert schedule.next_after(expected - timedelta(microseconds=1)) == expected


def test_schedules_in_words_and_bad_ones_refused() -> None:
    p = guide_plan()
    assert p["log_backup"].describe() == "every hour at :15"
    assert p["differential_backup"].describe() == "every night at 01:00 except sunday"
    assert p["full_backup"].describe() == "weekly on sunday at 01:00"
    for bad in (
        {"every": "week", "at": "01:00"},
        {"every": "month", "at": "01:00"},
        {"every": "day", "at": "25:00"},
        {"every": "day", "at": "1:00"},
        {"every": "month", "at": "01:00", "day_of_month": 31},
        {"every": "day", "at": "01:00", "days": ["monday", "monday"]},
        {"every": "hour", "at": "00:15", "days": ["monday"]},
        {"every": "day", "at": "01:00", "extra": 1},
    ):
        with pytest.raises(ValidationError):
            Schedule.model_validate(bad)


def test_sql_server_agent_schedules_round_trip() -> None:
    for task, s in guide_plan(PlanOptions(shrink="monthly")).items():
        a = agent_schedule(s)
        back = schedule_from_agent(
            a["freq_type"], a["freq_interval"], a["freq_subday_type"], a["active_start_time"]
        )
        assert back == s, task
    diff = agent_schedule(guide_plan()["differential_backup"])
    assert (diff["freq_type"], diff["freq_interval"]) == (8, 126)  # weekly, Monday..Saturday bits
    log = agent_schedule(guide_plan()["log_backup"])
    assert (
        log["freq_type"],
        log["freq_subday_type"],
        log["freq_subday_interval"],
        log["active_start_time"],
    ) == (4, 8, 1, 1500)
