"""Every action's result is one model of ``node_agent.protocol``: the agent records only results that
fit it (a driver returning another shape fails the operation, naming the field), and the record
reads back as the same model on the controller's side."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node_agent.drivers.base import HostDriver, OperationContext
from node_agent.journal import OperationJournal
from node_agent.operations import OperationManager
from node_agent.protocol import (
    ACTION_RESULTS,
    Action,
    BackupResult,
    LibraryParams,
    LibraryProbeResult,
    NodeStatus,
    NoParams,
    OperationState,
    Params,
    ResultError,
    ServiceStatus,
    parse_result,
)
from node_agent.runner import RecordingRunner


class AnswersDriver(HostDriver):
    """A driver whose every action answers what the test put in ``answers``."""

    kind = "test"

    def __init__(self, answers: dict[Action, Any]) -> None:
        self.answers = answers

    async def status(self) -> NodeStatus:
        return NodeStatus(
            name="n1",
            install_name="CRM",
            version="7.3",
            web=ServiceStatus.RUNNING,
            tomcat=ServiceStatus.RUNNING,
            replication_engine=False,
            driver=self.kind,
        )

    async def iis_started_at(self) -> datetime | None:
        return None

    async def perform(self, action: Action, params: Params, ctx: OperationContext) -> dict[str, Any]:
        answer: dict[str, Any] = self.answers[action]
        return answer


async def _run(tmp_path: Path, action: Action, params: Params, answer: Any) -> Any:
    ops = OperationManager(
        driver=AnswersDriver({action: answer}),
        journal=OperationJournal(tmp_path),
        runner=RecordingRunner(),
    )
    ops.submit("op-1", action, params)
    return await ops.wait("op-1")


async def test_a_result_of_the_wrong_shape_fails_the_operation(tmp_path: Path) -> None:
    # What the controller's library check used to read: ``ok``, which no model has.
    rec = await _run(tmp_path, Action.PROBE_LIBRARY, LibraryParams(), {"ok": True})
    assert rec.state == OperationState.FAILED
    assert rec.result is None
    assert "LibraryProbeResult" in (rec.error or "") and "path" in (rec.error or "")
    assert "the test driver's result is wrong" in (rec.error or "")


async def test_a_field_no_model_names_fails_the_operation(tmp_path: Path) -> None:
    answer = {"path": r"\\fs\crm", "reachable": True, "writable": True, "ok": True}
    rec = await _run(tmp_path, Action.PROBE_LIBRARY, LibraryParams(), answer)
    assert rec.state == OperationState.FAILED
    assert "ok: Extra inputs are not permitted" in (rec.error or "")


async def test_a_fitting_result_is_recorded_with_its_wire_names_and_reads_back(tmp_path: Path) -> None:
    done = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    answer = {
        "path": "database/op-1",
        "bytes": 4096,
        "sha256": "ab" * 32,
        "verified": True,
        "finished_at": done,
        "schema": "public",
    }
    rec = await _run(tmp_path, Action.BACKUP_DATABASE, NoParams(), answer)
    assert rec.state == OperationState.SUCCEEDED, rec.error
    assert rec.result == {
        "path": "database/op-1",
        "bytes": 4096,
        "sha256": "ab" * 32,
        "verified": True,
        "finished_at": "2024-05-01T12:00:00Z",
        "schema": "public",
    }
    backup = rec.result_as(BackupResult)
    assert (backup.size, backup.schema_name, backup.finished_at) == (4096, "public", done)
    with pytest.raises(ResultError, match="a backup_database result is a BackupResult"):
        rec.result_as(LibraryProbeResult)


def test_every_action_has_one_result_model() -> None:
    assert set(ACTION_RESULTS) == set(Action)
    with pytest.raises(ResultError, match="stop_web: the result does not fit WebResult: web"):
        parse_result(Action.STOP_WEB, {"state": "stopped"})
    with pytest.raises(ResultError, match="stop_web: the result does not fit WebResult"):
        parse_result(Action.STOP_WEB, None)
