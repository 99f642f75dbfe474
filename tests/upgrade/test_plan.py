"""The plan keeps the guide's order for any cluster; the evidence readers judge what agents report."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.agents.follow import Polling, new_lines
from controller.upgrade.evidence import (
    backup_evidence,
    compare_fingerprints,
    sessions_by_host,
    upgrade_log_findings,
)
from controller.upgrade.model import Run, RunStatus, StepStatus
from controller.upgrade.plan import PlannedNode, plan_upgrade
from controller.upgrade.restore import plan_restore
from node_agent.protocol import (
    BackupResult,
    DatabaseSessionsResult,
    FingerprintResult,
    ScriptOutcome,
    UpgradeLogResult,
)

OPTIONS = {"database": {"server": "sql01", "port": 1433, "user": "crmsql"}}


def cluster(n: int) -> list[PlannedNode]:
    return [
        PlannedNode(
            name=f"crm{i}",
            agent_url=f"http://crm{i}.agent",
            roles=("database", "replication_engine") if i == 1 else (),
            services=("email_manager",) if i == 1 else (),
            replication_engine=i == 1,
        )
        for i in range(1, n + 1)
    ]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), batch=st.integers(1, 12), signoff=st.booleans(), triggers=st.booleans())
def test_database_server_first_then_batches(n: int, batch: int, signoff: bool, triggers: bool) -> None:
    opts = {**OPTIONS, "batch_size": batch, "require_signoff": signoff, "disable_triggers": triggers}
    steps = plan_upgrade(run_id="up-1", nodes=cluster(n), target="2017 R1", options=opts, default_timeout=60)
    installers = [s for s in steps if s.action == "run_installer"]
    assert installers[0].node == "crm1"
    assert sorted(str(s.node) for s in installers) == sorted(f"crm{i}" for i in range(1, n + 1))
    db_wave = installers[0].wave
    other_waves = sorted({s.wave for s in installers[1:]})
    assert all(w > db_wave for w in other_waves)
    assert len(other_waves) == math.ceil((n - 1) / batch)
    assert all(sum(1 for s in installers if s.wave == w) <= batch for w in other_waves)
    # Registered once, with the wizard's own backup, on the database server only.
    assert installers[0].params["register"] is True and installers[0].params["backup"] is True
    assert all(s.params["register"] is False and s.params["backup"] is False for s in installers[1:])
    # No secret in a planned step, only placeholders.
    assert "crmsql" in str(installers[0].params) and "password" in installers[0].params["database"]
    assert all("LIC" not in str(s.params) for s in steps)
    # The order of phases follows the guide; each step reads its log after its installer.
    order = ["freeze", "backup", "baseline", "database_server", "other_servers", "after"]
    phases = [order.index(s.phase) for s in steps]
    assert phases == sorted(phases)
    for inst in installers:
        log = next(s for s in steps if s.action == "read_upgrade_log" and s.node == inst.node)
        assert log.wave == inst.wave and log.seq > inst.seq
    backups = {s.wave for s in steps if s.phase == "backup"}
    assert max(backups) < db_wave
    assert (steps[0].action == "signoff") == signoff
    if triggers:
        disable = next(s for s in steps if s.action == "disable_triggers")
        enable = next(s for s in steps if s.action == "enable_triggers")
        assert (
            disable.wave == db_wave
            and disable.seq < installers[0].seq
            and enable.wave > max(other_waves, default=0)
        )
    assert len({s.id for s in steps}) == len(steps)
    assert all(len(s.op_id_for(99)) <= 120 for s in steps)


def test_restore_touches_only_what_changed() -> None:
    nodes = cluster(3)
    steps = plan_upgrade(run_id="up-1", nodes=nodes, target="2017 R1", options=OPTIONS, default_timeout=60)
    run = Run(
        id="up-1",
        status=RunStatus.RUNNING,
        target_version="2017 R1",
        from_version="7.3",
        options=OPTIONS,
        preflight=[],
        context={"touched": ["crm1"]},
    )
    restore = plan_restore(run=run, nodes=nodes, steps=steps)
    assert min(s.seq for s in restore) > max(s.seq for s in steps)
    assert min(s.wave for s in restore) > max(s.wave for s in steps)
    assert [s.node for s in restore if s.action == "restore_database"] == ["crm1"]
    assert {s.node for s in restore if s.action == "restore_program_files"} == {"crm1"}
    assert {s.node for s in restore if s.action == "start_web"} == {"crm1", "crm2", "crm3"}
    assert restore[-2].action == "verify_restore" and restore[-1].action == "return_to_service"
    nothing = plan_restore(run=Run(**{**run.__dict__, "context": {}}), nodes=nodes, steps=steps)
    assert not [s for s in nothing if s.action.startswith("restore_")]
    assert all(s.status == StepStatus.PENDING for s in restore)


def test_evidence_readers() -> None:
    done = "2024-05-01T12:00:00Z"

    def backup(**kw: object) -> BackupResult:
        return BackupResult.model_validate({"verified": True, "finished_at": done, **kw})

    ev, problem = backup_evidence(backup(path="database/x", bytes=10, sha256="ab" * 32))
    assert problem is None and ev["bytes"] == 10 and ev["finished_at"] == "2024-05-01T12:00:00+00:00"
    assert backup_evidence(backup(path="x", bytes=0, sha256="a"))[1] == "the backup is empty"
    assert backup_evidence(backup(path="x", bytes=5))[1] == "the backup has no checksum"
    assert backup_evidence(backup(path="x", bytes=5, sha256="a", verified=False))[1] is not None
    # SQL Server's page checksums (RESTORE VERIFYONLY) stand in for a hash the agent cannot take.
    assert backup_evidence(backup(path="x", bytes=5, backend="mssql"))[1] is None
    log = UpgradeLogResult(
        ok=False,
        completed=True,
        scripts=[ScriptOutcome(name="views.es", success=False)],
        must_fix=["vCompany NB must be fixed"],
    )
    ev, problems = upgrade_log_findings(log)
    assert problems == ["script views.es failed", "NB must be fixed: vCompany NB must be fixed"]
    empty = UpgradeLogResult(ok=True, completed=True, scripts=[])
    assert upgrade_log_findings(empty)[1] == ["the upgrade log lists no scripts"]
    sessions = DatabaseSessionsResult(hosts={"crm1": 3, "crm2": 0}, total=3)
    assert sessions_by_host(sessions) == {"crm1": 3, "crm2": 0}
    base = FingerprintResult.model_validate(
        {"records": {"1": "a", "2": "b"}, "schema": "s1", "schema_version": "7.3"}
    )
    assert compare_fingerprints(base, base, schema=True) == []
    now = FingerprintResult.model_validate(
        {"records": {"1": "a", "2": "c"}, "schema": "s2", "schema_version": "2017 R1"}
    )
    assert compare_fingerprints(base, now, schema=True) == [
        "company 2 differs from the baseline",
        "schema version is '2017 R1', was '7.3'",
        "the database schema differs from the one before the upgrade",
    ]


def test_polling_and_log_tails() -> None:
    p = Polling(fraction=0.02, min_interval=0.05, max_interval=1.0)
    assert p.interval(0.0) == 0.05 and p.interval(1000) == 1.0
    p.observe("run_installer", 100.0)
    assert p.interval(0.0, "run_installer") == 1.0  # far from the expected end: at most a second
    assert p.interval(96.0, "run_installer") == 0.05  # around the expected end: closely
    assert p.interval(0.0, "stop_web") == 1.0  # unknown action: the shortest known is the guess
    assert new_lines(["a", "b"], ["b", "c"]) == ["c"]
    assert new_lines([], ["a"]) == ["a"]
    assert new_lines(["x"], ["y", "z"]) == ["y", "z"]
