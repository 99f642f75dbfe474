"""Operations as supervised tasks: cancel reaches the work, a restart leaves ``interrupted``,
the journal is atomic and never holds a secret."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node_agent.journal import OperationJournal
from node_agent.protocol import Action, OperationRecord, OperationState
from node_agent.runner import SubprocessRunner
from node_agent.testing import running_sandbox_agent


async def _until(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_cancel_reaches_a_hanging_action(
    tmp_path: Path, sqlite_url: str, tokens: dict[str, str]
) -> None:
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path,
        crm_db_url=sqlite_url,
        token=tokens["agent"],
        faults="backup_registry:hang",
    ) as agent:
        r = await agent.client.post("/v1/operations", json={"op_id": "h1", "action": "backup_registry"})
        assert r.status_code == 202
        await _until(lambda: agent.operations.get("h1").state == "running")
        # A mutating action waits behind it (one change at a time); a read-only one does not.
        await agent.client.post("/v1/operations", json={"op_id": "h2", "action": "stop_web"})
        assert (await agent.run("h3", "database_sessions")).state == "succeeded"
        assert agent.operations.get("h2").state == "pending"
        c = await agent.client.post("/v1/operations/h1/cancel")
        assert c.status_code == 200
        rec = await agent.operations.wait("h1")
        assert rec.state == "cancelled" and rec.error == "cancelled on request"
        assert (await agent.operations.wait("h2")).state == "succeeded"
        # Cancelling a finished operation changes nothing.
        again = (await agent.client.post("/v1/operations/h1/cancel")).json()
        assert again["state"] == "cancelled"


async def test_restart_mid_operation_reads_interrupted(
    tmp_path: Path, sqlite_url: str, tokens: dict[str, str]
) -> None:
    kw = dict(
        name="crm1", data_dir=tmp_path, crm_db_url=sqlite_url, token=tokens["agent"], roles=["database"]
    )
    async with running_sandbox_agent(faults="run_installer:hang", **kw) as agent:  # type: ignore[arg-type]
        await agent.client.post(
            "/v1/operations",
            json={
                "op_id": "u1",
                "action": "run_installer",
                "params": {"mode": "upgrade", "version": "2017 R1", "license_key": "KEY-0000-1111"},
            },
        )
        await _until(lambda: agent.operations.get("u1").state == "running")
        await agent.client.post("/v1/operations", json={"op_id": "u2", "action": "stop_web"})
    # The agent stopped with u1 running and u2 waiting.
    async with running_sandbox_agent(**kw) as agent:  # type: ignore[arg-type]
        for op in ("u1", "u2"):
            rec = (await agent.client.get(f"/v1/operations/{op}")).json()
            assert rec["state"] == "interrupted", rec
            assert "outcome is unknown" in rec["error"]
        # The same op id is still the same operation: it is not run again.
        r = await agent.client.post("/v1/operations", json={"op_id": "u2", "action": "stop_web"})
        assert r.json()["state"] == "interrupted"
        assert (await agent.client.get("/v1/status")).json()["web"] == "running"


async def test_an_agent_that_dies_mid_operation_leaves_interrupted(
    tmp_path: Path, sqlite_url: str, tokens: dict[str, str]
) -> None:
    kw = dict(
        name="crm1", data_dir=tmp_path, crm_db_url=sqlite_url, token=tokens["agent"], roles=["database"]
    )
    async with running_sandbox_agent(faults="backup_database:crash", **kw) as agent:  # type: ignore[arg-type]
        await agent.client.post("/v1/operations", json={"op_id": "k1", "action": "backup_database"})
        task = agent.operations._ops["k1"].task
        assert task is not None
        await asyncio.wait([task])  # the in-process "crash" ends the task without a word to the journal
        await agent.operations.journalled()  # what the journal had written before the crash
        on_disk = json.loads((tmp_path / "agent" / "operations" / "k1.json").read_text())
        assert on_disk["state"] == "running"
    async with running_sandbox_agent(**kw) as agent:  # type: ignore[arg-type]
        assert agent.operations.get("k1").state == OperationState.INTERRUPTED


def test_journal_names_files_one_to_one_and_prunes(tmp_path: Path) -> None:
    journal = OperationJournal(tmp_path)
    now = datetime(2026, 11, 28, tzinfo=UTC)
    old = OperationRecord(
        op_id="run:1",
        action=Action.STOP_WEB,
        state=OperationState.SUCCEEDED,
        created_at=now - timedelta(days=40),
        finished_at=now - timedelta(days=40),
    )
    new = old.model_copy(update={"op_id": "run-1", "finished_at": now, "created_at": now})
    journal.save(old)
    journal.save(new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-1.json", "run~1.json"]
    (tmp_path / "junk.json").write_text("{half a record")
    records = journal.load()
    assert set(records) == {"run:1", "run-1"}
    assert (tmp_path / "junk.bad").exists()
    assert journal.prune(records, now=now, keep=timedelta(days=30)) == 1
    assert set(records) == {"run-1"} and not (tmp_path / "run~1.json").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
async def test_cancel_terminates_a_real_subprocess(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = (
        f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); "
        "print('started', flush=True); time.sleep(60)"
    )
    lines: list[str] = []
    task = asyncio.create_task(
        SubprocessRunner(terminate_grace=2).run([sys.executable, "-c", code], on_line=lines.append)
    )
    await _until(lambda: lines == ["started"])
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_subprocess_output_and_exit_code(tmp_path: Path) -> None:
    r = await SubprocessRunner().run(
        [sys.executable, "-c", "import sys; print('a'); print('b'); sys.exit(3)"]
    )
    assert r.returncode == 3 and r.output.splitlines() == ["a", "b"]


async def test_an_existing_data_dir_is_used_as_it_is(
    tmp_path: Path, sqlite_url: str, tokens: dict[str, str]
) -> None:
    kw = dict(name="crm1", data_dir=tmp_path, crm_db_url=sqlite_url, token=tokens["agent"])
    async with running_sandbox_agent(roles=["database", "indexer"], version="7.2", **kw) as agent:  # type: ignore[arg-type]
        await agent.run("s1", "stop_tomcat")
        port = agent.driver._web.port
    async with running_sandbox_agent(roles=["escalation"], version="7.3", **kw) as agent:  # type: ignore[arg-type]
        status = (await agent.client.get("/v1/status")).json()
        assert status["version"] == "7.2" and status["roles"] == ["database", "indexer"]
        assert status["tomcat"] == "stopped" and status["services"]["indexer"] == "running"
        assert agent.driver._web.port == port
