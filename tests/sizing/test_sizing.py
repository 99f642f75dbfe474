"""The guide's "Server hardware recommendations" as advice: each row of its table, the memory rules,
through the function, ``crmcluster advise`` (table and ``--json``) and ``GET /api/v1/sizing``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config.sizing import RULES, TABLE, advise, database_server_memory_gb, plan_memory_gb, table_row
from tests.cli.fake_controller import invoke

#: The guide's text (not part of the repository); the quotes are checked where it is at hand.
GUIDE_PATH = Path(
    os.environ.get("CRMCLUSTER_GUIDE", "/work/shared/seed/sage-crm-2017r1-install-upgrade-guide.md")
)


def _flat(text: str) -> str:
    return " ".join(text.replace("\\", "").split())


def test_every_rule_and_table_cell_is_quoted_from_the_guide() -> None:
    if not GUIDE_PATH.is_file():
        pytest.skip(f"the guide's text is not at {GUIDE_PATH} (set CRMCLUSTER_GUIDE)")
    text = GUIDE_PATH.read_text(encoding="utf-8")
    guide = _flat(text)
    for key, quote in RULES.items():
        for part in (
            quote.replace("Under 50: ", "")
            .replace("Over 50: ", "")
            .replace("Over 200: ", "")
            .replace("Several hundred: ", "")
            .split(" ... ")
        ):
            assert _flat(part) in guide, key
    for row in TABLE:
        assert f"{row.users}\t{row.servers}\t{row.processors}" in text


@pytest.mark.parametrize(
    ("users", "db_size", "layout", "row"),
    [
        (1, 0.5, "single_machine", "Under 50"),
        (49, 1.9, "single_machine", "Under 50"),
        (49, 2.0, "split", "Under 50"),  # "if the database size is less than 2 gigabytes"
        (30, 5.0, "split", "Under 50"),
        (50, 1.0, "split", "Over 50"),
        (200, 1.0, "split", "Over 50"),
        (201, 1.0, "multi_server", "Over 200"),
        (299, 10.0, "multi_server", "Over 200"),
        (300, 10.0, "multi_server", "Several hundred"),
        (900, 80.0, "multi_server", "Several hundred"),
    ],
)
def test_each_row_of_the_guides_table(users: int, db_size: float, layout: str, row: str) -> None:
    advice = advise(users=users, call_center=True, db_size_gb=db_size, growth_gb_per_year=0)
    assert advice.row.users == row
    assert advice.layout == layout
    assert table_row(users).users == row
    rules = [r.rule for r in advice.reasons]
    assert advice.row.rule in rules
    if layout == "single_machine":
        assert [m.role for m in advice.machines] == ["web and database server"]
    elif layout == "split":
        assert [m.role for m in advice.machines] == ["database server", "web server (with the Indexer)"]
    else:
        assert len(advice.machines) == 3
        assert advice.machines[-1].count == "1 or more"
        assert "fiber channel SAN" in advice.machines[0].disks
    # the processors are the row's own
    assert advice.row.processors == {r.users: r.processors for r in TABLE}[row]


def test_the_guides_memory_example_six_gb_after_a_year_plans_eight() -> None:
    advice = advise(users=120, call_center=True, db_size_gb=4, growth_gb_per_year=2)
    db = advice.machines[0]
    assert advice.db_size_after_year_gb == 6
    assert (db.memory_gb_min, db.memory_gb_plan) == (7, 8)
    assert database_server_memory_gb(6) == 7
    assert plan_memory_gb(7) == 8
    assert "64-bit" in (db.software or "")
    reason = next(r for r in advice.reasons if r.rule == "database_memory")
    assert "6 GB after one year" in reason.finding and "at least 7 GB" in reason.finding


def test_64_bit_only_from_four_gb() -> None:
    small = advise(users=120, call_center=True, db_size_gb=1, growth_gb_per_year=1.5)  # 3.5 GB
    assert small.machines[0].memory_gb_min == 3.5
    assert small.machines[0].software == "SQL Server"
    assert "not required" in next(r.finding for r in small.reasons if r.rule == "64_bit")
    four = advise(users=120, call_center=True, db_size_gb=2, growth_gb_per_year=1)  # 4 GB
    assert "64-bit" in (four.machines[0].software or "")


def test_web_servers_eight_gb_and_quick_find_one_more_on_the_indexer() -> None:
    advice = advise(users=250, call_center=True, db_size_gb=10, growth_gb_per_year=5)
    roles = {m.role: m for m in advice.machines}
    assert roles["web server (with the Indexer)"].memory_gb_min == 9
    assert roles["more web servers"].memory_gb_min == 8
    assert roles["database server"].memory_gb_min == 16
    assert roles["database server"].memory_gb_plan == 16


def test_one_machine_adds_up_both_servers_and_warns_when_the_database_will_outgrow_it() -> None:
    advice = advise(users=20, call_center=True, db_size_gb=1.5, growth_gb_per_year=1)
    (machine,) = advice.machines
    assert machine.memory_gb_min == 2.5 + 1 + 8 + 1
    assert machine.memory_gb_plan == 16
    assert any(r.rule == "shared_machine" for r in advice.reasons)
    assert any("reaches 2.5 GB within a year" in n for n in advice.notes)


def test_users_who_are_not_call_center_keep_the_row_and_are_told_why() -> None:
    cc = advise(users=120, call_center=True, db_size_gb=3, growth_gb_per_year=1)
    sales = advise(users=120, call_center=False, db_size_gb=3, growth_gb_per_year=1)
    assert cc.layout == sales.layout == "split"
    finding = sales.reasons[0].finding
    assert "not call center" in finding and "generous" in finding
    assert "200 call center users" in sales.reasons[0].guide


@pytest.mark.parametrize(
    "kw",
    [
        {"users": 0, "db_size_gb": 1, "growth_gb_per_year": 0},
        {"users": 5, "db_size_gb": -1, "growth_gb_per_year": 0},
        {"users": 5, "db_size_gb": 1, "growth_gb_per_year": -2},
        {"users": 5, "db_size_gb": float("nan"), "growth_gb_per_year": 0},
    ],
)
def test_figures_that_cannot_be_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        advise(call_center=False, **kw)  # type: ignore[arg-type]


def test_cli_prints_the_recommendation_with_its_reasons_without_a_controller() -> None:
    result = invoke(
        None, "advise", "--users", "120", "--call-center", "--db-size", "4", "--growth", "2", env={}
    )
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "Split the database server and web server across two machines." in out
    assert "Over 50" in out
    assert "at least 7 GB" in out and "8 GB" in out
    assert "two eight-core processors" in out
    assert "database_memory" in out and "web_memory" in out and "quick_find" in out


def test_cli_json_is_the_advice() -> None:
    result = invoke(None, "advise", "--users", "40", "--db-size", "1", "--growth", "0.5", "--json", env={})
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["layout"] == "single_machine"
    assert data["row"]["users"] == "Under 50"
    assert data["machines"][0]["memory_gb_min"] == 11.5
    assert data["call_center"] is False


def test_cli_bad_figures_are_a_usage_error() -> None:
    result = invoke(None, "advise", "--users", "0", "--db-size", "1", env={})
    assert result.exit_code == 2
    assert result.stderr == "crmcluster: users: at least 1\n"
