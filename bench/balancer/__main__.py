"""Benchmark: the balancer as users run it vs. a bare uvicorn 307 app, same run, alternating rounds.

    bench/balancer/run [--rounds 3] [--duration 4] [--connections 32,128] [--alternatives] [--pin]

1. A temporary SQLite database gets a 3-server configuration in Custom_SysParams and 300 open
   sessions in Activity; three stand-in logon pages (in this process) answer the health checks.
2. Two servers run side by side for the whole run, each started the way its users start it:
   - the baseline, ``uvicorn bench.balancer.bare:app --no-access-log`` (uvicorn's own command
     line and defaults: uvloop, httptools), a raw ASGI app answering a fixed 307;
   - the balancer, ``crmcluster balancer --port P`` with its settings in the environment.
3. Every round drives each of them with wrk (Debian ``wrk``) at each ``--connections`` level
   (closed loop, ``--duration`` s), the order of the two swapped every round, then paced at
   half of its own peak (wrk with a pause per connection between an answer and the next request,
   at random in 0-20 ms).
4. Printed, per level: logons/s (median of rounds), the ratio balancer/bare (median of the
   rounds' own ratios: each pair ran back to back under the same conditions), p50/p99 (worst
   round), p99 at half peak, the CPU each server used per logon, the balancer's full garbage
   collections during the rounds, and the targets: ratio >= 0.85 at every level, p99 at half
   peak < 3 ms, no p99 above 20 ms at 128 connections. Then a POST with a logon form (sticky
   look-up) and, when installed, HAProxy's own 307 redirect (one thread) as a reference.
   ``--alternatives`` adds the designs not taken: Activity read per logon
   (``CRMCLUSTER_COUNTS_MODE=per_logon``), the logon as a FastAPI route, and the in-process
   cost of one decision vs. one Activity read.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PATH = "/crm/eware.dll/Logon"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int = 0
    cpu_us_per_request: float = 0.0


# Setup -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def logon_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def seed(url: str, fq: list[str]) -> None:
    from sqlalchemy import insert

    from config.crm_schema import create_embedded_crm_tables, crm_tables
    from config.database import make_engine
    from config.migrate import migrate
    from config.settings import BalancerSettings
    from config.sysparams import SysParamsStore

    engine = make_engine(url)
    tables = crm_tables()
    n = tables.names
    try:
        await migrate(engine)
        await create_embedded_crm_tables(engine, tables)
        store = SysParamsStore(tables, BalancerSettings().sysparam_row_names())
        now = datetime.now(UTC).replace(tzinfo=None)
        async with engine.begin() as conn:
            await store.write(
                conn,
                {"server_names": ["crm1", "crm2", "crm3"], "fq_server_names": fq, "do_load_balancing": False},
            )
            await conn.execute(insert(tables.users), [{n.user_logon: f"user{i}"} for i in range(300)])
            await conn.execute(
                insert(tables.activity),
                [
                    {
                        n.acty_user_id: i + 1,
                        n.acty_server_name: f"crm{i % 3 + 1}",
                        n.acty_logon_time: now - timedelta(minutes=i % 50),
                        n.acty_logoff: None,
                    }
                    for i in range(300)
                ],
            )
    finally:
        await engine.dispose()


@dataclass
class Server:
    """One server process, started with the command line its users type."""

    kind: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ready_path: str
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    results: dict[int, list[Result]] = field(default_factory=dict)
    halves: list[Result] = field(default_factory=list)

    @property
    def command(self) -> str:
        shown = [Path(a).name if a.startswith(str(BIN)) else a for a in self.argv]
        return " ".join(shown)

    async def start(self, *, pin: bool) -> None:
        taskset = ["taskset", "-c", "0"] if pin else []
        self.proc = await asyncio.create_subprocess_exec(
            *taskset, *self.argv, cwd=self.cwd, env={**os.environ, **self.env}
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise SystemExit(f"{self.kind} exited with {self.proc.returncode}: {self.command}")
            try:
                if await http_get_status(self.port, self.ready_path) in (200, 307):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        await self.stop()
        raise SystemExit(f"{self.kind} did not start on port {self.port}: {self.command}")

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def balancer_server(url: str, cwd: Path, **env: str) -> Server:
    port = free_port()
    base = {
        "CRMCLUSTER_CRM_DB_URL": url,
        "CRMCLUSTER_STATE_DB_URL": url,
        "CRMCLUSTER_INSTALL_NAME": "CRM",
    }
    return Server(
        "balancer",
        [str(BIN / "crmcluster"), "balancer", "--port", str(port)],
        {**base, **env},
        cwd,
        "/healthz",
        port,
    )


def bare_server() -> Server:
    port = free_port()
    argv = [str(BIN / "uvicorn"), "bench.balancer.bare:app", "--host", "127.0.0.1", "--port", str(port)]
    return Server("bare", [*argv, "--no-access-log", "--log-level", "warning"], {}, ROOT, PATH, port)


async def http_get_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        line = await reader.readline()
        return int(line.split()[1])
    finally:
        writer.close()


async def http_get_text(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        return (await reader.read()).decode(errors="replace")
    finally:
        writer.close()


async def full_collections(server: Server) -> int:
    text = await http_get_text(server.port, "/metrics")
    m = re.search(r'python_gc_collections_total\{generation="2"\} ([\d.e+]+)', text)
    return int(float(m.group(1))) if m else -1


# wrk ------------------------------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


async def wrk(
    server: Server,
    *,
    connections: int,
    duration: float,
    delay_ms: int = 0,
    post: bool = False,
    pin: bool = False,
) -> Result:
    script_lines = []
    if delay_ms:
        # a random pause (mean delay_ms): connections that paused in step would arrive in bursts
        script_lines.append(f"function delay() return math.random(0, {2 * delay_ms}) end")
    if post:
        script_lines += [
            'wrk.method = "POST"',
            'wrk.body = "User_Logon=user7&Password=never-logged&Mode=1"',
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"',
        ]
    args = [
        *(["taskset", "-c", "1"] if pin else []),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write("\n".join(script_lines) + "\n")
        script = fh.name
    cpu0 = server.cpu_seconds() if server.proc else 0.0
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, "-s", script, f"http://127.0.0.1:{server.port}{PATH}", stdout=asyncio.subprocess.PIPE
        )
        out = (await asyncio.wait_for(proc.communicate(), duration + 30))[0].decode()
    finally:
        os.unlink(script)
    cpu = (server.cpu_seconds() - cpu0) if server.proc else 0.0

    def grab(pattern: str) -> str:
        m = re.search(pattern, out)
        if not m:
            raise SystemExit(f"unexpected wrk output:\n{out}")
        return m.group(1)

    requests = int(grab(r"(\d+) requests in"))
    errors = 0
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        m = re.search(pattern, out)
        if m:
            errors += sum(int(g) for g in m.groups())
    return Result(
        rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(grab(r"\s50%\s+(\S+)")),
        p99_ms=_ms(grab(r"\s99%\s+(\S+)")),
        max_ms=_ms(grab(r"Latency\s+\S+\s+\S+\s+(\S+)")),
        requests=requests,
        errors=errors,
        cpu_us_per_request=cpu / requests * 1e6 if requests else 0.0,
    )


async def half_peak(server: Server, *, rate: float, duration: float, pin: bool) -> Result:
    """Paced at about ``rate``/s: each connection sends, gets its answer, pauses 0-20 ms (10 on average)."""
    delay_ms = 10
    conns = max(1, round(rate * delay_ms / 1000))
    return await wrk(server, connections=conns, duration=duration, delay_ms=delay_ms, pin=pin)


# HAProxy, a reference ---------------------------------------------------------------------------------
def haproxy_server(tmp: Path) -> Server | None:
    exe = shutil.which("haproxy")
    if exe is None:
        return None
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(
        "global\n  nbthread 1\n  maxconn 4096\n"
        "defaults\n  mode http\n  timeout client 30s\n  timeout server 30s\n  timeout connect 5s\n"
        f"frontend logon\n  bind 127.0.0.1:{port}\n"
        "  http-request redirect location http://crm1.example.com/crm/eware.dll/Logon code 307\n"
    )
    return Server("haproxy", [exe, "-f", str(cfg)], {}, tmp, PATH, port)


# The in-process alternatives -------------------------------------------------------------------------
async def in_process(url: str) -> tuple[float, float]:
    """Microseconds per in-memory decision, and per Activity read (one DB round trip per logon)."""
    from balancer.activity import ActivityReader
    from balancer.pool import ServerPool
    from config.crm_schema import crm_tables
    from config.database import make_engine
    from config.sysparams import ClusterConfig

    pool = ServerPool(install="crm", scheme="http", pending_ttl=30, slow_start=30, fall=3, rise=2)
    pool.apply_config(
        ClusterConfig.checked(server_names=["crm1", "crm2", "crm3"], fq_server_names=["a", "b", "c"]), now=0.0
    )
    n = 200_000
    t0 = time.perf_counter()
    for i in range(n):
        pool.decide(None, now=i * 1e-4)
    decide_us = (time.perf_counter() - t0) / n * 1e6
    engine = make_engine(url)
    reader = ActivityReader(crm_tables(), session_timeout=timedelta(minutes=60))
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        rounds = 200
        t0 = time.perf_counter()
        last = None
        for _ in range(rounds):
            async with engine.connect() as conn:
                snap = await reader.read(conn, since_id=last, now=now, full=False)
                last = snap.last_id
        read_us = (time.perf_counter() - t0) / rounds * 1e6
    finally:
        await engine.dispose()
    return decide_us, read_us


# Main -----------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


async def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/balancer/run", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--connections", default="32,128", help="connection levels (default 32,128)")
    parser.add_argument("--alternatives", action="store_true", help="also measure the designs not taken")
    parser.add_argument("--pin", action="store_true", help="servers on cpu 0, wrk on cpu 1 (taskset)")
    args = parser.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    levels = [int(c) for c in args.connections.split(",")]
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    pin = args.pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2

    tmp = Path(tempfile.mkdtemp(prefix="crmcluster-bench-"))
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    pages = [await asyncio.start_server(logon_page, "127.0.0.1", 0) for _ in range(3)]
    fq = [f"127.0.0.1:{p.sockets[0].getsockname()[1]}" for p in pages]
    bare, bal = bare_server(), balancer_server(url, tmp)
    haproxy = haproxy_server(tmp)
    extra: dict[str, Result] = {}
    started: list[Server] = []
    try:
        await seed(url, fq)
        for s in (bare, bal):
            await s.start(pin=pin)
            started.append(s)
        print(
            f"wrk -t1, {args.rounds} rounds of {args.duration:g} s at {', '.join(map(str, levels))}"
            f" connections; cpus: {os.cpu_count()}{' (servers on cpu 0, wrk on cpu 1)' if pin else ''};"
            f" load average {os.getloadavg()[0]:.1f} (other work on this machine skews the figures)",
            flush=True,
        )
        for s in (bare, bal):
            print(f"  {s.kind:<9} {s.command}")
        for s in (bare, bal):
            await wrk(s, connections=max(levels), duration=1, pin=pin)  # warm-up
        gc_before = await full_collections(bal)
        for r in range(args.rounds):
            order = (bare, bal) if r % 2 == 0 else (bal, bare)
            for c in levels:
                for s in order:
                    res = await wrk(s, connections=c, duration=args.duration, pin=pin)
                    s.results.setdefault(c, []).append(res)
                    print(
                        f"  round {r + 1} c={c:<4} {s.kind:<9} {res.rps:>9,.0f}/s  p50 {res.p50_ms:5.2f} ms"
                        f"  p99 {res.p99_ms:6.2f} ms  max {res.max_ms:6.1f} ms"
                        f"  cpu {res.cpu_us_per_request:5.1f} us/logon",
                        flush=True,
                    )
            for s in order:
                peak = max(s.results[c][-1].rps for c in levels)
                half = await half_peak(s, rate=peak / 2, duration=args.duration, pin=pin)
                s.halves.append(half)
                print(
                    f"  round {r + 1} half    {s.kind:<9} {half.rps:>9,.0f}/s  p99 {half.p99_ms:6.2f} ms",
                    flush=True,
                )
        gc_full = await full_collections(bal) - gc_before
        extra["post"] = await wrk(bal, connections=max(levels), duration=args.duration, post=True, pin=pin)
        for s in (bare, bal):
            await s.stop()
        started.clear()
        if haproxy is not None:
            await haproxy.start(pin=pin)
            started.append(haproxy)
            for c in levels:
                haproxy.results[c] = [await wrk(haproxy, connections=c, duration=args.duration, pin=pin)]
            await haproxy.stop()
            started.clear()
        if args.alternatives:
            per_logon = balancer_server(url, tmp, CRMCLUSTER_COUNTS_MODE="per_logon")
            await per_logon.start(pin=pin)
            started.append(per_logon)
            extra["per_logon"] = await wrk(
                per_logon, connections=max(levels), duration=args.duration, pin=pin
            )
            await per_logon.stop()
            route = balancer_server(url, tmp)
            route.kind = "fastapi"
            route.argv = [sys.executable, "-m", "bench.balancer.serve", str(route.port)]
            route.cwd = ROOT
            await route.start(pin=pin)
            started.append(route)
            extra["fastapi"] = await wrk(route, connections=max(levels), duration=args.duration, pin=pin)
            await route.stop()
            started.clear()
            decide_us, read_us = await in_process(url)
    finally:
        for s in started:
            await s.stop()
        for p in pages:
            p.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"{'median of rounds':<22}{'bare/s':>10}{'balancer/s':>12}{'ratio':>7}   p99 bare / balancer (worst)"
    )
    ratios: dict[int, float] = {}
    for c in levels:
        a, b = bare.results[c], bal.results[c]
        own = [y.rps / x.rps for x, y in zip(a, b, strict=True)]
        ratios[c] = statistics.median(own)
        print(
            f"{c:>4} connections{'':<5}{statistics.median(x.rps for x in a):>10,.0f}"
            f"{statistics.median(x.rps for x in b):>12,.0f}{ratios[c]:>7.2f}"
            f"   {max(x.p99_ms for x in a):.2f} / {max(x.p99_ms for x in b):.2f} ms"
            f"   (rounds {', '.join(f'{r:.2f}' for r in own)})"
        )
    half_b = statistics.median(h.p99_ms for h in bal.halves)
    half_a = statistics.median(h.p99_ms for h in bare.halves)
    rate_b = statistics.median(h.rps for h in bal.halves)
    print(
        f"p99 at half peak (median of rounds): bare {half_a:.2f} ms,"
        f" balancer {half_b:.2f} ms at {rate_b:,.0f}/s"
    )
    cpu_a = statistics.median(x.cpu_us_per_request for c in levels for x in bare.results[c])
    cpu_b = statistics.median(x.cpu_us_per_request for c in levels for x in bal.results[c])
    print(f"server CPU per logon at peak: bare {cpu_a:.1f} us, balancer {cpu_b:.1f} us")
    print(f"balancer full garbage collections during the rounds: {gc_full}")
    post = extra["post"]
    print(
        f"balancer POST with a logon form (sticky look-up), {max(levels)} connections: {post.rps:,.0f}/s,"
        f" p99 {post.p99_ms:.2f} ms"
    )
    if haproxy is not None:
        for c in levels:
            h = haproxy.results[c][0]
            b = statistics.median(x.rps for x in bal.results[c])
            print(
                f"reference, HAProxy 307 (nbthread 1) at {c}: {h.rps:,.0f}/s, p99 {h.p99_ms:.2f} ms;"
                f" balancer/HAProxy {b / h.rps:.2f}"
            )
    errors = sum(x.errors for s in (bare, bal) for rs in s.results.values() for x in rs)
    errors += sum(h.errors for s in (bare, bal) for h in s.halves) + post.errors
    print(f"errors (non-3xx answers, socket errors): {errors}")
    worst128 = max((x.p99_ms for c in levels if c >= 128 for x in bal.results[c]), default=0.0)
    print()
    print(
        f"target balancer/bare >= 0.85 at every level: {verdict(all(r >= 0.85 for r in ratios.values()))}"
        f" ({', '.join(f'{c}: {r:.2f}' for c, r in ratios.items())})"
    )
    print(f"target p99 at half peak < 3 ms: {verdict(half_b < 3)} ({half_b:.2f} ms)")
    if worst128:
        print(
            f"target no p99 above 20 ms at 128 connections: {verdict(worst128 <= 20)}"
            f" (worst round {worst128:.2f} ms)"
        )
    if args.alternatives:
        best = statistics.median(x.rps for x in bal.results[max(levels)])
        print(
            f"alternative, Activity read per logon: {extra['per_logon'].rps:,.0f}/s,"
            f" {extra['per_logon'].rps / best:.3f}x the default"
        )
        print(
            f"alternative, logon as a FastAPI route: {extra['fastapi'].rps:,.0f}/s,"
            f" {extra['fastapi'].rps / best:.2f}x the raw path"
        )
        print(
            f"in process: one decision {decide_us:.2f} us; one Activity read (SQLite, 300 sessions)"
            f" {read_us:,.0f} us"
        )
    print(f"command: bench/balancer/run {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    asyncio.run(main())
