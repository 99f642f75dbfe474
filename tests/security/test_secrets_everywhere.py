"""After a whole demo — three sandbox servers, an upgrade whose installer fails on crm2 and the
live environment restored — no token, SQL password or license key is anywhere: not in the logs
(every service's stdout and stderr), the upgrade's events, its checklist, the audit trail, an
error answer, ``/metrics``, nor in any file the demo wrote (databases, journals, logs, backups)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.demo.test_demo import processes_of, start_demo, wait_for

pytestmark = pytest.mark.slow

LICENSE = "LIC-2017R1-SECRETKEY-4242"
DB_PASSWORD = "Sq1-Pa55word-Never-Shown"
TERMINAL = ("succeeded", "failed", "restored", "aborted")


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "demo"
    yield data_dir
    for pid in processes_of(data_dir):
        os.kill(pid, signal.SIGKILL)


def read_stream(client: httpx.Client, url: str, seconds: float) -> str:
    """What an event stream sends within ``seconds`` (it replays the run's events from the start)."""
    out: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        with client.stream("GET", url, timeout=httpx.Timeout(seconds, read=1.0)) as resp:
            for line in resp.iter_lines():
                out.append(line)
                if time.monotonic() > deadline:
                    break
    except httpx.ReadTimeout:
        pass
    return "\n".join(out)


def test_no_secret_anywhere_after_an_upgrade_and_a_restore(demo_dir: Path) -> None:
    proc = start_demo(demo_dir, "--fault", "crm2:run_installer")
    seen: dict[str, str] = {}
    try:
        doc = wait_for(demo_dir / "demo.json", proc, timeout=100)
        api = doc["controller_url"] + "/api/v1"
        with httpx.Client(timeout=15, headers={"Authorization": f"Bearer {doc['admin_token']}"}) as c:
            viewer = c.post(f"{api}/tokens", json={"name": "prometheus", "role": "viewer"}).json()["token"]
            body = {
                "target_version": "2017 R1",
                "license_key": LICENSE,
                "database": {"server": "sql01", "user": "crmsql", "password": DB_PASSWORD},
            }
            planned = c.post(f"{api}/upgrades", json=body)
            assert planned.status_code == 201, planned.text
            run_id = planned.json()["id"]
            started = c.post(f"{api}/upgrades/{run_id}/start")
            assert started.status_code == 200, started.text
            deadline = time.monotonic() + 240
            while (run := c.get(f"{api}/upgrades/{run_id}").json())["status"] not in TERMINAL:
                assert time.monotonic() < deadline, f"the run is still {run['status']}"
                time.sleep(0.5)
            assert run["status"] == "restored", run["message"]
            seen["run"] = json.dumps(run)
            seen["checklist"] = c.get(f"{api}/upgrades/{run_id}/checklist").text
            seen["checklist.html"] = c.get(
                f"{api}/upgrades/{run_id}/checklist", headers={"Accept": "text/html"}
            ).text
            seen["events"] = read_stream(c, f"{api}/upgrades/{run_id}/events", 5)
            assert "run_installer" in seen["events"]
            seen["audit"] = c.get(f"{api}/audit", params={"limit": 1000}).text
            seen["jobs"] = c.get(f"{api}/jobs").text
            seen["cluster"] = c.get(f"{api}/cluster").text
            # Errors: a second plan while one exists, a bad body carrying the secrets.
            seen["error1"] = c.post(f"{api}/upgrades", json=body | {"batch_size": 0}).text
            seen["error2"] = c.post(
                f"{api}/nodes", json={"name": "crm9", "agent_url": LICENSE, "license_key": LICENSE}
            ).text
            bearer = {"Authorization": f"Bearer {viewer}"}
            seen["metrics controller"] = c.get(doc["controller_url"] + "/metrics", headers=bearer).text
            seen["metrics balancer"] = c.get(doc["balancer_url"] + "/metrics", headers=bearer).text
            assert "crmcluster_controller_" in seen["metrics controller"]
            assert "crmcluster_balancer_" in seen["metrics balancer"]
            for node in doc["nodes"]:
                agent = {"Authorization": f"Bearer {node['agent_token']}"}
                seen[f"ops {node['name']}"] = c.get(node["agent_url"] + "/v1/operations", headers=agent).text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    seen["demo stdout"] = out.decode("utf-8", "replace")
    seen["demo stderr"] = err.decode("utf-8", "replace")
    secrets = {
        "license key": LICENSE,
        "SQL password": DB_PASSWORD,
        "admin token": doc["admin_token"],
        "viewer token": viewer,
        **{f"agent token of {n['name']}": n["agent_token"] for n in doc["nodes"]},
    }
    for what, secret in secrets.items():
        for where, text in seen.items():
            assert secret not in text, f"the {what} is in {where}"
    files = [p for p in demo_dir.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        for what, secret in secrets.items():
            if what == "admin token" and path.name in ("demo-secrets.json", "demo.json"):
                continue  # the demo's own credentials file (mode 0600), and the file it hands out
            if what.startswith("agent token") and path.name in ("demo.json",):
                continue
            assert secret.encode() not in data, f"the {what} is in {path.relative_to(demo_dir)}"
