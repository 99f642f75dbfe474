"""The agent as the demo starts it: ``crmcluster agent`` in its own process, real sockets.

A ``crash`` fault really ends the process mid-operation; the agent started again on the same data
dir keeps its server (same web port, same state) and reads that operation ``interrupted``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(self, tmp_path: Path, env: dict[str, str], port: int) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = open(self.tmp_path / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crmcluster",
                "agent",
                "--name",
                "crm1",
                "--driver",
                "sandbox",
                "--data-dir",
                str(self.tmp_path / "crm1"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp_path,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp_path / "agent.log").read_text()
            try:
                r = httpx.get(self.url + "/healthz", timeout=1)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the agent did not start")

    def wait_exit(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture
def agent_process(tmp_path: Path, tokens: dict[str, str]) -> Iterator[AgentProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_")}
    env.update(
        CRMCLUSTER_AGENT_TOKEN=tokens["agent"],
        CRMCLUSTER_CRM_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}",
        CRMCLUSTER_STATE_DB_URL=f"sqlite+aiosqlite:///{tmp_path / 'state.db'}",
        CRMCLUSTER_SANDBOX_ROLES="database,replication_engine,email_manager",
        CRMCLUSTER_SANDBOX_VERSION="7.2",
        CRMCLUSTER_SANDBOX_FAULTS="backup_database:crash*1",
        CRMCLUSTER_CONTROLLER_URL=f"http://127.0.0.1:{_free_port()}",  # nobody there: the agent carries on
        CRMCLUSTER_HEARTBEAT_INTERVAL="0.2",
    )
    proc = AgentProcess(tmp_path, env, _free_port())
    try:
        yield proc
    finally:
        proc.stop()


def test_the_agent_process_crashes_and_restarts_with_its_state(
    agent_process: AgentProcess, tokens: dict[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {tokens['agent']}"}
    agent_process.start()
    with httpx.Client(base_url=agent_process.url, headers=auth, timeout=10) as c:
        status = c.get("/v1/status").json()
        assert status["version"] == "7.2" and status["replication_engine"] is True
        web = status["web_url"]
        assert httpx.get(web + "/crm/eware.dll/Logon").status_code == 200
        assert httpx.post(web + "/crm/eware.dll/Logon", data={"EWARE_USERID": "alice"}).status_code == 200
        assert c.get("/v1/status", headers={"Authorization": "Bearer nope"}).status_code == 401
        r = c.post("/v1/operations", json={"op_id": "bk-1", "action": "backup_database"})
        assert r.status_code == 202
    assert agent_process.wait_exit() == 70  # the injected crash ended the process

    agent_process.start()
    with httpx.Client(base_url=agent_process.url, headers=auth, timeout=10) as c:
        rec = c.get("/v1/operations/bk-1").json()
        assert rec["state"] == "interrupted"
        status = c.get("/v1/status").json()
        assert status["web_url"] == web and status["logged_on"] == 1 and status["version"] == "7.2"
        r = c.post("/v1/operations", json={"op_id": "bk-2", "action": "backup_database"})
        assert r.status_code == 202
        for _ in range(100):
            rec = c.get("/v1/operations/bk-2").json()
            if rec["state"] not in ("pending", "running"):
                break
            time.sleep(0.1)
        assert rec["state"] == "succeeded"
    agent_process.stop()  # SIGTERM: uvicorn's graceful shutdown, then the signal's own exit
    assert agent_process.proc is not None and agent_process.proc.returncode in (0, -signal.SIGTERM)
    log = (agent_process.tmp_path / "agent.log").read_text()
    assert "Traceback" not in log and tokens["agent"] not in log
