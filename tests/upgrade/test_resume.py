"""Only the lease holder drives upgrades, and a controller that dies mid-run is picked up where it
stopped: nothing sent twice (in-process against the fake cluster, and as real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import crm_tables
from config.database import make_engine
from config.migrate import migrate
from config.settings import CommonSettings
from config.state_schema import nodes, utcnow
from config.sysparams import SysParamsStore
from controller.upgrade import runtime as upgrade
from controller.upgrade.lease import LeaderLease
from controller.upgrade.model import LOCAL_ACTIONS
from tests.upgrade.conftest import LICENSE, Harness
from tests.upgrade.counting_proxy import CountingProxy
from tests.upgrade.sandbox import LIBRARY_UNC, ROLES, issue_node_tokens
from tests.upgrade.test_sandbox_upgrade import DATABASE

REPO = Path(__file__).resolve().parents[2]


async def test_lease_is_compare_and_set_with_expiry(migrated_engine: AsyncEngine) -> None:
    now = [datetime(2026, 11, 28, 12, 0, 0)]
    a = LeaderLease(migrated_engine, holder="ctl-a", ttl=10, clock=lambda: now[0])
    b = LeaderLease(migrated_engine, holder="ctl-b", ttl=10, clock=lambda: now[0])
    assert await a.acquire() and a.held
    assert not await b.acquire() and not b.held
    now[0] += timedelta(seconds=5)
    assert await a.acquire()  # renewed: expires at 12:00:15
    gen = a.generation
    now[0] += timedelta(seconds=9)
    assert not await b.acquire()
    now[0] += timedelta(seconds=2)
    assert not a.held
    assert await b.acquire() and b.generation == gen + 1
    assert not await a.acquire()
    await b.release()
    assert await a.acquire()
    assert (await a.current()) == ("ctl-a", now[0] + timedelta(seconds=10))


async def test_controller_restarted_mid_step_resumes_without_sending_twice(harness: Harness) -> None:
    h = harness
    h.cluster.durations = {"run_installer": 0.4}
    run = await h.plan(batch_size=1)
    await h.command(run["id"], "start")
    step = await h.wait_step(run["id"], lambda s: s["action"] == "run_installer" and s["status"] == "running")
    # The controller "dies": its loop and executors stop where they are.
    ctx = h.app.state.ctx
    task = ctx.tasks._tasks["upgrade-orchestrator"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await h.run(run["id"]))["status"] == "running"
    assert h.cluster.sent[step["op_id"]] == 1
    upgrade.start(ctx)  # "started again"
    done = await h.wait(run["id"], "succeeded", "failed", "restored")
    assert done["status"] == "succeeded"
    assert h.cluster.sent_twice() == []
    assert all(s["attempt"] == 0 for s in done["plan"])
    assert h.cluster.registrations == 1


# Real processes -----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_")}
        full.update(env)
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "crmcluster", *args], cwd=self.tmp, env=full, stdout=log, stderr=log
            )

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


async def _wait_http(url: str, token: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as c:
        while True:
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not come up")
            await asyncio.sleep(0.1)


@pytest.fixture
async def exit_stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


@pytest.mark.slow
@pytest.mark.timeout(360)  # three agents and three controller starts, real processes: slow on a busy machine
async def test_controller_process_killed_mid_run_finishes_after_restart(
    procs: Procs,
    exit_stack: AsyncExitStack,
    db_url: str,
    crm_db_url: str,
    tokens: dict[str, str],
    secret_key: str,
    tmp_path: Path,
) -> None:
    library = tmp_path / "library"
    library.mkdir()
    agent_ports = {name: _free_port() for name in ROLES}
    node_tokens = await issue_node_tokens(db_url, secret_key, ROLES)
    for name, roles in ROLES.items():
        procs.start(
            name,
            [
                "agent",
                "--name",
                name,
                "--driver",
                "sandbox",
                "--data-dir",
                str(tmp_path / name),
                "--host",
                "127.0.0.1",
                "--port",
                str(agent_ports[name]),
            ],
            {
                "CRMCLUSTER_AGENT_TOKEN": node_tokens[name],
                "CRMCLUSTER_CRM_DB_URL": crm_db_url,
                "CRMCLUSTER_STATE_DB_URL": db_url,
                "CRMCLUSTER_SANDBOX_ROLES": ",".join(roles),
                "CRMCLUSTER_SANDBOX_LIBRARY_ROOT": str(library),
                "CRMCLUSTER_AGENT_URL": f"http://127.0.0.1:{agent_ports[name]}",
            },
        )
        await _wait_http(f"http://127.0.0.1:{agent_ports[name]}/v1/status", node_tokens[name])
    # The controller reaches each agent through a proxy that counts the operations it receives.
    proxies = {
        name: await exit_stack.enter_async_context(CountingProxy(f"http://127.0.0.1:{agent_ports[name]}"))
        for name in ROLES
    }

    state = make_engine(db_url)
    crm = make_engine(crm_db_url)
    try:
        await migrate(state)
        tables = crm_tables()
        async with crm.begin() as conn:
            await SysParamsStore(tables, CommonSettings(_env_file=None).sysparam_row_names()).write(
                conn, {"server_names": list(ROLES), "doc_store": LIBRARY_UNC}
            )
            if (
                await conn.execute(select(tables.users).where(tables.users.c.User_Logon == "Admin"))
            ).first() is None:
                await conn.execute(tables.users.insert().values(User_Logon="Admin"))
        async with state.begin() as conn:
            for name, roles in ROLES.items():
                await conn.execute(
                    insert(nodes).values(
                        name=name,
                        state="up",
                        weight=1.0,
                        fqdn=None,
                        roles=roles,
                        logged_on=0,
                        fenced=False,
                        agent_url=proxies[name].url,
                        updated_at=utcnow(),
                    )
                )
    finally:
        await state.dispose()
        await crm.dispose()

    port = _free_port()
    controller_env = {
        "CRMCLUSTER_ADMIN_TOKEN": tokens["admin"],
        "CRMCLUSTER_SECRET_KEY": secret_key,
        "CRMCLUSTER_STATE_DB_URL": db_url,
        "CRMCLUSTER_CRM_DB_URL": crm_db_url,
        "CRMCLUSTER_CONTROLLER_ID": "controller-under-test",
        "CRMCLUSTER_UPGRADE_LEASE_TTL": "2",
        "CRMCLUSTER_DATA_DIR": str(tmp_path / "controller"),
    }
    base = f"http://127.0.0.1:{port}"
    procs.start("controller", ["controller", "--port", str(port)], controller_env)
    await _wait_http(f"{base}/healthz", tokens["admin"])
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30
    ) as c:
        resp = await c.post(
            "/api/v1/upgrades",
            json={
                "target_version": "2017 R1",
                "license_key": LICENSE,
                "database": DATABASE,
                "batch_size": 1,
                "require_acceptance": False,
            },
        )
        assert resp.status_code == 201, resp.text
        run_id = resp.json()["id"]
        assert resp.json()["blocking"] == [], resp.json()["preflight"]
        assert (await c.post(f"/api/v1/upgrades/{run_id}/start")).status_code == 200

        kills = 0
        deadline = time.monotonic() + 240
        # Killed once the database server's upgrade is under way, then once the others' is.
        targets = ["database_server", "other_servers"]
        while True:
            try:
                got = await c.get(f"/api/v1/upgrades/{run_id}")
            except httpx.HTTPError:
                got = None
            if got is None or got.status_code != 200:  # the controller is starting again
                await asyncio.sleep(0.05)
                continue
            run = got.json()
            if run["status"] in ("succeeded", "failed", "restored"):
                break
            if kills < len(targets):
                phase = targets[kills]
                if any(s["phase"] == phase and s["status"] in ("running", "succeeded") for s in run["plan"]):
                    procs.kill("controller")  # SIGKILL: no shutdown, no lease release
                    kills += 1
                    procs.start("controller", ["controller", "--port", str(port)], controller_env)
                    await _wait_http(f"{base}/healthz", tokens["admin"])
            assert time.monotonic() < deadline, (
                run.get("status"),
                (tmp_path / "controller.log").read_text()[-3000:],
            )
            await asyncio.sleep(0.02)
        assert run["status"] == "succeeded", (
            run["message"],
            [s for s in run["plan"] if s["status"] == "failed"],
            (tmp_path / "controller.log").read_text()[-3000:],
        )
        assert kills == 2, kills
        assert all(s["attempt"] == 0 for s in run["plan"])

    # Each agent step reached its agent once, under its first op id: one POST each on the wire,
    # counted where the agent receives it, though the controller died twice in the middle.
    received = sum((p.received for p in proxies.values()), Counter[str]())
    agent_steps = [s for s in run["plan"] if s["action"] not in LOCAL_ACTIONS]
    assert agent_steps and all(s["status"] == "succeeded" for s in agent_steps)
    for s in agent_steps:
        assert s["op_id"] == f"{run_id}.{s['id']}.0"
        assert received[s["op_id"]] == 1, (s["id"], received[s["op_id"]])
    twice = {op: n for op, n in received.items() if n > 1}
    assert twice == {}, twice
    step_ops = [op for op in received if op.startswith(run_id + ".") and ".preflight." not in op]
    assert {".".join(op.split(".")[:2]) for op in step_ops} <= {f"{run_id}.{s['id']}" for s in run["plan"]}
    async with httpx.AsyncClient() as c:
        for name in ROLES:
            own = {"Authorization": f"Bearer {node_tokens[name]}"}
            st = (await c.get(f"http://127.0.0.1:{agent_ports[name]}/v1/status", headers=own)).json()
            assert st["version"] == "2017 R1"
