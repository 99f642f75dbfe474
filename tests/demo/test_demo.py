"""``crmcluster demo``: planning (ports, roles, faults, secrets) in-process, and the whole demo as a
real process — up, supervised, stopped cleanly with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crmcluster.demo import (
    DemoError,
    agent_spec,
    make_plan,
    node_roles,
    parse_faults,
    service_specs,
    write_atomically,
)

ROOT = Path(__file__).resolve().parents[2]


# Planning ------------------------------------------------------------------------------------------
def test_roles_follow_the_guides_example() -> None:
    assert node_roles(3) == {
        "crm1": ["database", "replication_engine", "email_manager"],
        "crm2": ["indexer"],
        "crm3": ["escalation"],
    }
    assert node_roles(1) == {
        "crm1": ["database", "replication_engine", "email_manager", "indexer", "escalation"]
    }
    assert node_roles(4)["crm4"] == []


def test_faults_are_checked() -> None:
    names = ["crm1", "crm2"]
    assert parse_faults(
        ["crm2:run_installer", "crm1:backup_database:hang", "crm2:stop_web:fail*2"], names
    ) == {
        "crm2": ["run_installer:fail", "stop_web:fail*2"],
        "crm1": ["backup_database:hang"],
    }
    for bad, words in (
        ("crm9:run_installer", "no node"),
        ("crm1:make_coffee", "unknown action"),
        ("crm1:run_installer:explode", "unknown kind"),
        ("crm1", "NODE:ACTION"),
    ):
        with pytest.raises(DemoError, match=words):
            parse_faults([bad], names)


def test_secrets_are_made_once_per_data_dir_and_kept_private(tmp_path: Path) -> None:
    a = make_plan(
        nodes=2,
        data_dir=tmp_path,
        ports="auto",
        faults=[],
        host="127.0.0.1",
        controller_port=None,
        balancer_port=None,
    )
    b = make_plan(
        nodes=2,
        data_dir=tmp_path,
        ports="auto",
        faults=[],
        host="127.0.0.1",
        controller_port=None,
        balancer_port=None,
    )
    assert (a.admin_token, a.secret_key) == (b.admin_token, b.secret_key)
    assert len(a.admin_token) >= 16
    # No shared agent token any more: each node's is issued by the controller at registration.
    assert "agent_token" not in json.loads((tmp_path / "demo-secrets.json").read_text())
    assert (tmp_path / "demo-secrets.json").stat().st_mode & 0o777 == 0o600
    ports = [
        a.controller_port,
        a.balancer_port,
        *[p for n in a.nodes for p in (n.agent_port, n.web_port, n.agent_check_port)],
    ]
    assert len(set(ports)) == len(ports) == 8


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(DemoError, match=rf"port {port} on 127.0.0.1 \(controller\) is already in use"):
            make_plan(
                nodes=1,
                data_dir=tmp_path,
                ports="auto",
                faults=[],
                host="127.0.0.1",
                controller_port=port,
                balancer_port=None,
            )
    with pytest.raises(DemoError, match="--ports"):
        make_plan(
            nodes=1,
            data_dir=tmp_path,
            ports="some",
            faults=[],
            host="127.0.0.1",
            controller_port=None,
            balancer_port=None,
        )


def test_services_log_as_asked_and_take_nothing_else_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMCLUSTER_LOG_FORMAT", "text")
    monkeypatch.setenv("CRMCLUSTER_STATE_DB_URL", "postgresql+asyncpg://elsewhere/db")
    plan = make_plan(
        nodes=1,
        data_dir=tmp_path,
        ports="auto",
        faults=[],
        host="127.0.0.1",
        controller_port=None,
        balancer_port=None,
    )
    specs = service_specs(plan)
    assert {s.env["CRMCLUSTER_LOG_FORMAT"] for s in specs} == {"text"}
    assert {s.env["CRMCLUSTER_STATE_DB_URL"] for s in specs} == {plan.state_db_url}
    plan.node_tokens["crm1"] = "agt-" + "0" * 20  # issued by the controller in a real start
    agent = agent_spec(plan, plan.nodes[0])
    assert agent.env["CRMCLUSTER_LOG_FORMAT"] == "text"
    assert agent.env["CRMCLUSTER_AGENT_CHECK_PORT"] == str(plan.nodes[0].agent_check_port)


def test_demo_json_is_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "demo.json"
    write_atomically(target, {"a": 1})
    write_atomically(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]  # no temporary file left


# The real thing -------------------------------------------------------------------------------------
def processes_of(data_dir: Path) -> list[int]:
    """Live processes whose command line or environment names ``data_dir`` (the demo's children)."""
    needle = str(data_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if needle in blob and state != "Z":
            found.append(int(entry.name))
    return found


def start_demo(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "crmcluster", "demo", "--ports", "auto", "--data-dir", str(data_dir), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "demo"
    yield data_dir
    for pid in processes_of(data_dir):  # never leave anything behind, even when a test fails
        os.kill(pid, signal.SIGKILL)


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"demo exited {proc.returncode}: {err.decode()[-2000:]}")
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.2)
    raise AssertionError(f"{path} not written in {timeout}s")


@pytest.mark.slow
def test_the_demo_runs_supervises_and_stops_cleanly(demo_dir: Path) -> None:
    proc = start_demo(demo_dir, "--fault", "crm3:probe_library")
    try:
        doc = wait_for(demo_dir / "demo.json", proc, timeout=100)
        assert set(doc) >= {
            "controller_url",
            "balancer_url",
            "dashboard_url",
            "admin_token",
            "install_name",
            "nodes",
        }
        assert doc["install_name"] == "CRM"
        assert doc["dashboard_url"] == f"{doc['controller_url']}/?token={doc['admin_token']}"
        tokens = [n["agent_token"] for n in doc["nodes"]]
        assert len(set(tokens)) == 3 and all(t.startswith("nt_") for t in tokens)  # one per node
        assert [(n["name"], n["roles"]) for n in doc["nodes"]] == [
            ("crm1", ["database", "replication_engine", "email_manager"]),
            ("crm2", ["indexer"]),
            ("crm3", ["escalation"]),
        ]
        admin = {"Authorization": f"Bearer {doc['admin_token']}"}
        with httpx.Client(timeout=10, headers=admin) as c:
            cluster = c.get(f"{doc['controller_url']}/api/v1/cluster").json()
            assert {n["name"]: n["state"] for n in cluster["nodes"]} == {
                "crm1": "up",
                "crm2": "up",
                "crm3": "up",
            }
            assert cluster["warnings"] == []
            assert cluster["sysparams"]["fq_server_names"] == [
                n["web_url"].split("//")[1] for n in doc["nodes"]
            ]
            assert cluster["sysparams"]["doc_store"]
            assert sum(n["logged_on"] for n in cluster["nodes"]) == 5
            assert all(n["logged_on"] >= 1 for n in cluster["nodes"])  # spread by the balancer
            servers = c.get(f"{doc['balancer_url']}/api/v1/servers").json()["servers"]
            assert [s["name"] for s in servers] == ["crm1", "crm2", "crm3"]
            # Every agent answers HAProxy's agent-check on the port demo.json names.
            for n in doc["nodes"]:
                with socket.create_connection(("127.0.0.1", n["agent_check_port"]), timeout=5) as s:
                    assert s.makefile("rb").readline() == b"up ready 100%\n", n["name"]
            lib = c.post(f"{doc['controller_url']}/api/v1/library/verify").json()
            assert {n["name"]: n["ok"] for n in lib["nodes"]} == {"crm1": True, "crm2": True, "crm3": False}
            # supervision: a killed agent is started again and comes back up
            old = doc["pids"]["crm2"]
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                new = json.loads((demo_dir / "demo.json").read_text())["pids"]["crm2"]
                if new != old:
                    break
                time.sleep(0.2)
            assert new != old
            deadline = time.monotonic() + 30
            answered = False
            while time.monotonic() < deadline and not answered:
                try:
                    st = c.get(
                        f"{doc['nodes'][1]['agent_url']}/v1/status",
                        headers={"Authorization": f"Bearer {doc['nodes'][1]['agent_token']}"},
                    )
                    answered = st.status_code == 200
                except httpx.TransportError:
                    time.sleep(0.2)
            assert answered
        children = processes_of(demo_dir)
        assert len(children) >= 6  # the demo, controller, balancer, three agents
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"Ctrl-C stops everything" in out
    assert doc["admin_token"].encode() not in err
    assert processes_of(demo_dir) == []
    assert not (demo_dir / "demo.json").exists()


@pytest.mark.slow
def test_ctrl_c_while_starting_leaves_nothing_behind(demo_dir: Path) -> None:
    proc = start_demo(demo_dir, "--nodes", "2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(processes_of(demo_dir)) < 4:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert processes_of(demo_dir) == []


def test_bad_options_fail_with_one_line(tmp_path: Path) -> None:
    for args, words in (
        (["--fault", "crm7:run_installer"], "no node 'crm7'"),
        (["--nodes", "0"], "1 to 20"),
    ):
        proc = start_demo(tmp_path / "d", *args)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err.decode()
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and words in lines[0], lines


async def test_the_database_is_prepared_afresh_on_every_start(tmp_path: Path) -> None:
    from sqlalchemy import func, inspect, select

    from config.crm_schema import crm_tables
    from config.database import make_engine
    from config.state_schema import nodes, utcnow
    from crmcluster.demo_data import DEMO_USERS, prepare_database

    url = f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}"
    state_url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    fq = ["127.0.0.1:8801", "127.0.0.1:8802", "127.0.0.1:8803", "127.0.0.1:8804"]
    await prepare_database(
        crm_url=url,
        state_url=state_url,
        server_names=["crm1", "crm2", "crm3", "crm4"],
        fq_server_names=fq,
        dtls_server_name="crm1",
    )
    t = crm_tables()
    n = t.names
    engine = make_engine(url)
    state = make_engine(state_url)
    try:
        async with state.begin() as conn:
            for name in ("crm1", "crm4"):
                await conn.execute(
                    nodes.insert().values(name=name, state="up", roles=[], updated_at=utcnow())
                )
        async with engine.begin() as conn:
            await conn.execute(
                t.activity.insert().values(
                    {
                        n.acty_user_id: 1,
                        n.acty_server_name: "crm1",
                        n.acty_logon_time: utcnow(),
                        n.acty_logoff: None,
                    }
                )
            )
        # a restart with three nodes on other ports
        await prepare_database(
            crm_url=url,
            state_url=state_url,
            server_names=["crm1", "crm2", "crm3"],
            fq_server_names=fq[1:],
            dtls_server_name="crm1",
        )
        async with state.connect() as conn:
            assert [r[0] for r in await conn.execute(select(nodes.c.name))] == ["crm1"]
        async with engine.connect() as conn:
            assert "nodes" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
            open_rows = await conn.scalar(
                select(func.count()).select_from(t.activity).where(t.acty("acty_logoff").is_(None))
            )
            assert open_rows == 0
            assert await conn.scalar(select(func.count()).select_from(t.users)) == len(DEMO_USERS)
            rows = await conn.execute(select(t.parm("parm_name"), t.parm("parm_value")))
            values: dict[Any, Any] = {name: value for name, value in rows}
        assert values["ServerNames"] == "crm1;crm2;crm3"
        assert values["FQServerNames"] == "127.0.0.1:8802;127.0.0.1:8803;127.0.0.1:8804"
        assert values["DTLSServerName"] == "crm1" and values["DocStore"].startswith("\\\\")
    finally:
        await engine.dispose()
        await state.dispose()
