"""A real ``crmcluster demo`` process for end-to-end tests: free ports, a temporary data dir,
stopped cleanly (SIGTERM, then SIGKILL of its own process group) in teardown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT = 120.0
ROOT = Path(__file__).resolve().parents[2]


def crmcluster(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the real ``crmcluster`` command (a new process, as a person or a script would)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "crmcluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )


@contextlib.contextmanager
def running_demo(data_dir: Path, *extra: str) -> Iterator[dict[str, Any]]:
    """Start ``crmcluster demo --ports auto --data-dir DATA_DIR``; yield its ``demo.json``."""
    log = (data_dir.parent / f"{data_dir.name}-demo.log").open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmcluster", "demo", "--ports", "auto", "--data-dir", str(data_dir), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    demo_json = data_dir / "demo.json"
    children: dict[str, int] = {}
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not demo_json.exists():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"demo exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"demo not ready in {STARTUP_TIMEOUT}s: {Path(log.name).read_text()[-2000:]}"
                )
            time.sleep(0.2)
        data = json.loads(demo_json.read_text())
        children = {k: int(v) for k, v in (data.get("pids") or {}).items()}
        yield data
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of ours left in its group
        log.close()
    left = _alive(children)
    for pid in left.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"the demo left processes running after SIGTERM: {left}"


def _alive(pids: dict[str, int], *, grace: float = 10.0) -> dict[str, int]:
    """The services of ``pids`` still running after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        left = {}
        for name, pid in pids.items():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            with contextlib.suppress(OSError):
                state = Path(f"/proc/{pid}/stat").read_text().split()[2]
                if state == "Z":  # exited, not yet reaped by its parent
                    continue
            left[name] = pid
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def api(demo: dict[str, Any]) -> httpx.Client:
    return httpx.Client(
        base_url=demo["controller_url"] + "/api/v1",
        headers={"Authorization": f"Bearer {demo['admin_token']}"},
        timeout=30.0,
    )


def wait_for(
    predicate: Any, *, timeout: float = 60.0, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Poll ``predicate()`` until it returns something true (real processes: no clock to inject)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
