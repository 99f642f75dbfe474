"""Benchmark: N agents heartbeating once a second, written one by one (the baseline: one
transaction per heartbeat, :meth:`NodeRegistry.observe`) or in groups (:class:`HeartbeatWriter`,
what the heartbeat route uses), in the same run, on SQLite (a file in WAL mode, the embedded
default) and on the local PostgreSQL.

    bench/heartbeats/run [--agents 500] [--seconds 5] [--db sqlite,postgresql]

Each agent sends a heartbeat every second (spread evenly over the second) and waits for its answer;
printed per database and mode: heartbeats answered within 10 s per second, of the N offered (the
share of those sent, times N), latency p50
and p99, errors, the process CPU per heartbeat, and the groups' mean size. It measures the state
database writes, the part the issue found saturated ("database is locked", one core per 200/s);
the HTTP layer in front is the same for both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from config.database import make_engine
from config.migrate import migrate
from config.state_schema import nodes, utcnow
from controller.registry.heartbeat_writer import HeartbeatWriter
from controller.registry.nodes import NodeRecord, NodeRegistry
from node_agent.protocol import NodeStatus, ServiceStatus

POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def status(name: str) -> NodeStatus:
    return NodeStatus(
        name=name,
        install_name="CRM",
        version="7.3",
        roles=[],
        web=ServiceStatus.RUNNING,
        tomcat=ServiceStatus.RUNNING,
        services={},
        replication_engine=False,
        driver="sandbox",
        web_url=f"http://{name}.example.com/",
    )


async def seed(engine: AsyncEngine, names: list[str]) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(nodes).where(nodes.c.name.like("bench-%")))
        if not names:
            return
        await conn.execute(
            insert(nodes),
            [
                {
                    "name": n,
                    "state": "up",
                    "weight": 1.0,
                    "agent_url": f"http://{n}.agent",
                    "roles": [],
                    "version": "7.3",
                    "logged_on": 0,
                    "fenced": False,
                    "updated_at": utcnow(),
                }
                for n in names
            ],
        )


async def load(
    observe: Callable[[str, NodeStatus], Awaitable[NodeRecord]], names: list[str], seconds: float
) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop = time.monotonic() + seconds

    async def agent(i: int, name: str) -> None:
        nonlocal errors, sent
        st = status(name)
        await asyncio.sleep(i / len(names))  # spread over the second, as real agents drift apart
        due = time.monotonic()
        while due < stop:
            t0 = time.monotonic()
            sent += 1
            try:
                await asyncio.wait_for(observe(name, st), 10)
            except Exception:  # noqa: BLE001 - counted: the benchmark reports errors, not tracebacks
                errors += 1
            else:
                latencies.append(time.monotonic() - t0)
            due += 1.0
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    await asyncio.gather(*(agent(i, n) for i, n in enumerate(names)))
    return latencies, errors, sent


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def one(url: str, mode: str, agents: int, seconds: float) -> dict[str, float]:
    engine = make_engine(url)
    await migrate(engine)
    names = [f"bench-{i:04d}" for i in range(agents)]
    await seed(engine, names)
    registry = NodeRegistry(engine)
    writer = HeartbeatWriter(registry)
    observe = writer.observe if mode == "groups" else registry.observe
    cpu0 = time.process_time()
    latencies, errors, sent = await load(observe, names, seconds)
    cpu = time.process_time() - cpu0
    await seed(engine, [])
    await engine.dispose()
    return {
        "delivered": len(latencies) / max(sent, 1) * agents,
        "p50": pct(latencies, 50) * 1000,
        "p99": pct(latencies, 99) * 1000,
        "errors": errors,
        "cpu_ms": cpu / max(len(latencies), 1) * 1000,
        "group": statistics.mean(writer.groups) if mode == "groups" and writer.groups else 1.0,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--db", default="sqlite,postgresql")
    args = ap.parse_args()
    print(f"{args.agents} agents, one heartbeat a second each, {args.seconds:.0f} s per mode")
    print(
        f"{'database':<11} {'mode':<11} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'cpu ms/hb':>10} {'group':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for db in args.db.split(","):
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'state.db'}" if db == "sqlite" else POSTGRES
            results = {}
            for mode in ("one-by-one", "groups"):
                r = results[mode] = await one(url, mode, args.agents, args.seconds)
                print(
                    f"{db:<11} {mode:<11} {r['delivered']:>7.0f}/{args.agents:<4} {r['p50']:>8.1f} "
                    f"{r['p99']:>8.1f} {r['errors']:>7.0f} {r['cpu_ms']:>10.2f} {r['group']:>6.1f}"
                )
            base, new = results["one-by-one"], results["groups"]
            print(
                f"{db:<11} ratio       delivered x{new['delivered'] / max(base['delivered'], 1e-9):.2f}, "
                f"p99 x{new['p99'] / max(base['p99'], 1e-9):.2f}, CPU per heartbeat "
                f"x{new['cpu_ms'] / max(base['cpu_ms'], 1e-9):.2f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
