"""A real HAProxy on loopback for the tests: started from a shipped configuration with only the
addresses, ports and paths replaced, stopped by its PID, asked through its stats socket."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def substitute(text: str, pattern: str, replacement: str, *, count: int = 0) -> str:
    """``re.sub`` that fails when the shipped file no longer has what the test replaces."""
    new, n = re.subn(pattern, replacement, text, flags=re.M)
    assert n > 0 and (count == 0 or n == count), f"{pattern!r} matched {n} times in the configuration"
    return new


def for_loopback(text: str, *, socket_path: Path, servers: dict[str, str]) -> str:
    """The shipped configuration, run in the foreground as the test's user on free ports.

    ``servers`` replaces the configuration's server lines, in order (``name -> "addr:port opts"``).
    """
    text = substitute(text, r"^\s*stats socket \S+", f"    stats socket {socket_path}")
    for directive in ("user", "group", "daemon", "log /dev/log"):
        text = substitute(text, rf"^\s*{directive}\b.*\n", "")
    text = substitute(text, r"^\s*bind :80\b.*$", f"    bind 127.0.0.1:{free_port()}")
    text = substitute(text, r"^\s*bind :8404$", f"    bind 127.0.0.1:{free_port()}")
    shipped = re.findall(r"^\s*server (\S+) .*$", text, flags=re.M)
    assert list(servers) == shipped, f"the configuration's servers are {shipped}"
    for name, rest in servers.items():
        text = substitute(text, rf"^\s*server {name} .*$", f"    server {name} {rest}", count=1)
    return text


@dataclass
class ServerStat:
    status: str
    weight: int
    last_agent: str
    check_status: str


class RunningHAProxy:
    def __init__(self, process: subprocess.Popen[bytes], socket_path: Path, log: Path) -> None:
        self.process = process
        self.socket_path = socket_path
        self.log = log

    async def command(self, line: str) -> str:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.socket_path)), 5)
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(), 5)).decode()
        finally:
            writer.close()

    async def servers(self, backend: str) -> dict[str, ServerStat]:
        """``show stat`` of the backend's servers."""
        raw = await self.command("show stat")
        rows = csv.DictReader(io.StringIO(raw.lstrip("# ")))
        return {
            r["svname"]: ServerStat(
                status=r["status"],
                weight=int(r["weight"] or 0),
                last_agent=r.get("last_agt", ""),
                check_status=r.get("check_status", ""),
            )
            for r in rows
            if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def wait_for(
        self, backend: str, server: str, status: str, *, timeout: float, agent: str = ""
    ) -> tuple[float, ServerStat]:
        """Poll until the server's status is ``status`` (``DRAIN`` matches ``DRAIN (agent)``, not a
        transition such as ``UP 1/3``) and its last agent answer starts with ``agent``; returns
        (seconds taken, its stat)."""
        started = time.monotonic()
        last: ServerStat | None = None
        while True:
            last = (await self.servers(backend)).get(server)
            if (
                last is not None
                and (last.status == status or last.status.startswith(status + " ("))
                and last.last_agent.startswith(agent)
            ):
                return time.monotonic() - started, last
            if time.monotonic() - started > timeout:
                said = self.log.read_text()[-3000:]
                raise AssertionError(
                    f"{server} is {last} after {timeout}s, not {status}; HAProxy said:\n{said}"
                )
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def running_haproxy(haproxy: str, config: str, workdir: Path) -> Iterator[RunningHAProxy]:
    """Start ``haproxy -db -f`` (foreground), wait for its stats socket, stop it by PID on exit."""
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(config)
    socket_path = Path(re.findall(r"stats socket (\S+)", config)[0])
    log = workdir / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if process.poll() is not None:
                raise AssertionError(f"haproxy exited {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy's stats socket did not appear:\n{log.read_text()}")
            time.sleep(0.05)
        yield RunningHAProxy(process, socket_path, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
