"""The demo's processes: started, watched, restarted when they die, and stopped — all of them.

Each service runs as ``python -m crmcluster <command>`` in a session of its own (so a Ctrl-C in the
terminal reaches only the demo, which then stops its children in order) with its output in a log
file. On Linux every child also gets ``PR_SET_PDEATHSIG``: should the demo itself be killed
outright, the kernel stops its children too, so nothing is left behind.

    sup = Supervisor([ServiceSpec("controller", argv, env, log_path, health_url)], say=print)
    sup.start_all()
    await sup.watch(stop_event)     # restarts a service that exits, until stop_event is set
    sup.stop_all()                  # SIGTERM each, wait, SIGKILL what is left
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ServiceSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str
    health_headers: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass
class Running:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = 0
    next_restart: float | None = None


class Supervisor:
    """Starts :class:`ServiceSpec` processes and keeps them running until told to stop."""

    def __init__(
        self,
        specs: list[ServiceSpec],
        *,
        say: Callable[[str], None],
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.specs = specs
        self.say = say
        self.on_restart = on_restart
        self.running: dict[str, Running] = {}
        self.stopping = False

    def _spawn(self, spec: ServiceSpec) -> subprocess.Popen[bytes]:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log:
            if sys.platform == "win32":  # pragma: no cover - a process group of its own, no fork
                return subprocess.Popen(
                    spec.argv,
                    env=spec.env,
                    cwd=spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
                )
            return subprocess.Popen(
                spec.argv,
                env=spec.env,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,  # only prctl: no locks taken between fork and exec
            )

    def start_all(self) -> None:
        for spec in self.specs:
            self.running[spec.name] = Running(spec, self._spawn(spec), time.monotonic())

    def add(self, spec: ServiceSpec) -> None:
        """Start one more service (watched and restarted like the others from now on)."""
        self.specs.append(spec)
        self.running[spec.name] = Running(spec, self._spawn(spec), time.monotonic())

    def pids(self) -> dict[str, int]:
        return {name: r.proc.pid for name, r in self.running.items()}

    def exited(self) -> dict[str, int]:
        """Services whose process has exited, with the exit code."""
        out = {}
        for name, r in self.running.items():
            code = r.proc.poll()
            if code is not None:
                out[name] = code
        return out

    def log_tail(self, name: str, lines: int = 5) -> list[str]:
        path = self.running[name].spec.log_path
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    async def wait_healthy(self, names: list[str], *, timeout: float) -> None:
        """Wait until every named service answers its health URL with 200; raise on exit or time-out."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for name in sorted(pending):
                    r = self.running[name]
                    code = r.proc.poll()
                    if code is not None:
                        tail = self.log_tail(name, 1)
                        why = f": {tail[-1]}" if tail else ""
                        raise ServiceFailed(f"{name} exited with code {code} while starting{why}")
                    try:
                        resp = await client.get(r.spec.health_url, headers=r.spec.health_headers)
                    except httpx.HTTPError:
                        continue
                    if resp.status_code == 200:
                        pending.discard(name)
                if not pending:
                    return
                if time.monotonic() > deadline:
                    raise ServiceFailed(
                        f"{', '.join(sorted(pending))} did not become healthy in {timeout:.0f}s"
                    )
                await asyncio.sleep(0.25)

    async def watch(self, stop: asyncio.Event, *, interval: float = 0.5) -> None:
        """Restart any service that exits (1 s, then doubling up to 30 s between tries) until ``stop``."""
        while not stop.is_set():
            now = time.monotonic()
            for name, r in self.running.items():
                if self.stopping or stop.is_set():
                    return
                code = r.proc.poll()
                if code is None:
                    continue
                if r.next_restart is None:
                    delay = min(30.0, 2.0 ** min(r.restarts, 5)) if now - r.started < 30 else 1.0
                    r.next_restart = now + delay
                    self.say(f"{name} exited (code {code}); restarting in {delay:.0f}s")
                elif now >= r.next_restart:
                    r.proc = self._spawn(r.spec)
                    r.started = now
                    r.restarts += 1
                    r.next_restart = None
                    self.say(f"{name} restarted (pid {r.proc.pid})")
                    if self.on_restart is not None:
                        self.on_restart(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def stop_all(self, *, timeout: float = 10.0) -> None:
        """SIGTERM every service's process group, wait up to ``timeout``, then SIGKILL the rest."""
        self.stopping = True
        for r in self.running.values():
            if r.proc.poll() is None:
                _signal_group(r.proc, kill=False)
        deadline = time.monotonic() + timeout
        for r in self.running.values():
            left = max(0.1, deadline - time.monotonic())
            try:
                r.proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                self.say(f"{r.spec.name} did not stop in {timeout:.0f}s; killing it")
                _signal_group(r.proc, kill=True)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.proc.wait(timeout=5)


def _signal_group(proc: subprocess.Popen[bytes], *, kill: bool) -> None:
    """SIGTERM (or SIGKILL) the process group our child leads (it was started in a session of its
    own); on Windows, terminate the process itself.

    Only called while the child is not yet reaped, so its id cannot belong to anyone else."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sys.platform == "win32":  # pragma: no cover
            proc.kill() if kill else proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)


class ServiceFailed(Exception):
    """A demo service exited or never became healthy."""
