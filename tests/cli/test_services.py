"""``crmcluster controller|balancer|agent`` run through :func:`crmcluster.services.serve`: uvicorn's
own loop and HTTP choice (uvloop, httptools) and a collector tamed after start-up."""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from crmcluster import collector

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_service_runs_on_uvloop_and_httptools_with_start_up_frozen() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cli.runtime_probe", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/runtime", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert body is not None, proc.communicate()[1].decode() if proc.poll() is not None else "no answer"
        assert body["loop"].startswith("uvloop")
        assert body["httptools"] is True
        # FastAPI, pydantic and uvicorn alone are thousands of objects: all frozen at start-up
        assert body["frozen"] > 10_000
        assert body["threshold"] == [collector.GEN0, collector.GEN1, collector.GEN2]
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def test_tame_after_startup_freezes_and_sets_thresholds() -> None:
    before = gc.get_threshold()
    try:
        collector.tame_after_startup()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (collector.GEN0, collector.GEN1, collector.GEN2)
        assert collector.collector_stats()["frozen"] == gc.get_freeze_count()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
