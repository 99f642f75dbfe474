"""Reading upgrade logs: the sandbox's own, and logs shaped like Sage's, with and without errors."""

from __future__ import annotations

from node_agent.upgrade_log import UPGRADE_SCRIPTS, ScriptOutcome, parse_upgrade_log, render_upgrade_log


def _render(outcomes: list[ScriptOutcome], notes: list[str], completed: bool = True) -> str:
    return render_upgrade_log(
        install_name="CRM",
        from_version="7.3",
        to_version="2017 R1",
        outcomes=outcomes,
        must_fix=notes,
        completed=completed,
        when="2026-11-28 23:00:00 UTC",
    )


def test_a_clean_log() -> None:
    log = parse_upgrade_log(_render([ScriptOutcome(s, True, "completed") for s in UPGRADE_SCRIPTS], []))
    assert log.ok and [s.name for s in log.scripts] == list(UPGRADE_SCRIPTS)
    assert (log.from_version, log.to_version) == ("7.3", "2017 R1")
    assert log.must_fix == [] and log.error_files == []


def test_a_failed_script_and_must_fix_lines() -> None:
    outcomes = [ScriptOutcome(s, s != "views.es", "x") for s in UPGRADE_SCRIPTS[:6]]
    log = parse_upgrade_log(
        _render(outcomes, ["views.es: view vSentinel could not be upgraded"], completed=False)
    )
    assert not log.ok and not log.completed
    assert [s.name for s in log.scripts if not s.success] == ["views.es"]
    assert log.must_fix == ["NB must be fixed: views.es: view vSentinel could not be upgraded"]
    assert log.error_files == ["*views.es.html"]
    result = log.as_result()
    assert result["failed_scripts"] == ["views.es"] and result["ok"] is False


def test_a_sage_shaped_log_written_by_hand() -> None:
    document = """<html><body><h2>Upgrade Summary</h2>
    <table>
      <tr><td><b>CustomPages.es</b></td><td>Successful</td></tr>
      <tr><td>Custom_Captions.es</td><td><font color=red>Errors occurred</font></td></tr>
      <tr><td>Tables.es</td><td>Success</td></tr>
      <tr><td>Update_indexes_mssql.sql</td><td>OK</td></tr>
      <tr><td>Some heading without a script</td><td>Success</td></tr>
    </table>
    <a href='Custom_Captions*.html'>Custom_Captions*.html</a>
    Column Comp_Sector: NB must be fixed &mdash; drop statistic _dta_stat_1<br>
    nb MUST BE FIXED: index IX_1 on Company</body></html>"""
    log = parse_upgrade_log(document)
    assert [(s.name, s.success) for s in log.scripts] == [
        ("CustomPages.es", True),
        ("Custom_Captions.es", False),
        ("Tables.es", True),
        ("Update_indexes_mssql.sql", True),
    ]
    assert len(log.must_fix) == 2 and "Comp_Sector" in log.must_fix[0]
    assert log.error_files == ["Custom_Captions*.html"]
    assert not log.ok


def test_an_empty_document_is_not_ok() -> None:
    assert not parse_upgrade_log("<html></html>").ok
