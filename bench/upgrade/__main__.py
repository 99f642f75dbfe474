"""Benchmark: the upgrade orchestration against N simulated servers whose operations take a fixed time.

    bench/upgrade/run [--nodes 100,500] [--step-time 0.5] [--batch 25] [--poll 0.005] [--hold 1.0]

Each N runs in a fresh process (so its peak memory is its own) with the real orchestrator, store
(SQLite state database in a temporary folder, WAL), executor and group commit; only the agents are
simulated (:mod:`bench.upgrade.fake`, one httpx.MockTransport). Printed per N:

- **upgrade makespan** — the database server's installer starting to the last server's log read —
  against the issue's ideal critical path: the database server, then ceil((N-1)/batch) batches,
  each an installer and a log read (2 x step time);
- **run makespan** against the ideal of the whole plan (every wave's longest lane of operations);
- **users locked out** with the new order (users return last: after the smoke checks, the records
  comparison and the post-upgrade backups) against the **critical path** of that window (every
  wave between the lock-out and the return, each its longest lane of operations x step time),
  target ≤ 1.1 x at N = 100 and N = 500; the **acceptance hold** (accepted by the benchmark after
  ``--hold`` seconds, as an operator would after testing) is left out of both and printed on its
  own line;
- the controller's **peak memory** (max RSS of the process) and requests made to agents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import insert

from bench.upgrade.fake import SimulatedCluster
from config.database import make_engine
from config.migrate import migrate
from config.secrets import SecretBox
from config.settings import ControllerSettings
from config.state_schema import nodes, utcnow
from controller.agents.client import AgentPool
from controller.agents.follow import Polling
from controller.upgrade.lease import LeaderLease
from controller.upgrade.model import (
    LOCAL_ACTIONS,
    TERMINAL,
    AcceptRequest,
    DatabaseLoginIn,
    RunStatus,
    Step,
    UpgradeRequest,
)
from controller.upgrade.orchestrator import Orchestrator
from controller.upgrade.store import UpgradeStore

#: Run from here: ``python -m bench.upgrade`` imports the packages of this checkout.
ROOT = Path(__file__).resolve().parents[2]


def _t(v: str | datetime | None) -> float:
    if v is None:
        return float("nan")
    if isinstance(v, str):
        v = datetime.fromisoformat(v.rstrip("Z"))
    return v.timestamp()


def ideal_waves(steps: list[Step], ops_per_step: dict[str, int], step_time: float) -> dict[int, float]:
    """Per wave: the longest lane's operations x step time (controller-only work costs nothing)."""
    lanes: dict[int, dict[str, float]] = {}
    for s in steps:
        lane = s.node or s.id
        cost = ops_per_step.get(s.id, 0 if s.action in LOCAL_ACTIONS else 1) * step_time
        lanes.setdefault(s.wave, {}).setdefault(lane, 0.0)
        lanes[s.wave][lane] += cost
    return {w: max(ls.values()) for w, ls in lanes.items()}


async def one(n: int, *, step_time: float, batch: int, poll: float, hold: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="crmcluster-bench-upgrade-"))
    url = f"sqlite+aiosqlite:///{tmp / 'state.db'}"
    engine = make_engine(url)
    await migrate(engine)
    sim = SimulatedCluster(n, step_time=step_time)
    async with engine.begin() as conn:
        await conn.execute(
            insert(nodes),
            [
                {
                    "name": name,
                    "state": "up",
                    "weight": 1.0,
                    "agent_url": f"http://{name}.agent",
                    "roles": sim.roles(name),
                    "version": "7.3",
                    "logged_on": 0,
                    "fenced": False,
                    "updated_at": utcnow(),
                }
                for name in sim.names
            ],
        )
    key = Fernet.generate_key().decode()
    settings = ControllerSettings(
        _env_file=None,
        admin_token=SecretStr("bench-admin-token-0123456789"),
        agent_token=SecretStr("bench-agent-token-0123456789"),
        secret_key=SecretStr(key),
        state_db_url=url,
        max_connections=1_000_000,
    )
    agents = AgentPool("bench-agent-token-0123456789", transport_for=sim.transport_for)
    store = UpgradeStore(engine)
    orch = Orchestrator(
        store=store,
        agents=agents,
        box=SecretBox(key),
        settings=settings,
        lease=LeaderLease(engine, holder="bench", ttl=30),
        polling=Polling(min_interval=poll),
        session_wait=step_time,
    )
    t0 = time.perf_counter()
    run = await orch.plan(
        UpgradeRequest(
            target_version="2017 R1",
            license_key=SecretStr("BENCH-LICENSE-KEY"),
            batch_size=batch,
            database=DatabaseLoginIn(server="sql01", user="crmsql", password=SecretStr("bench-password")),
        ),
        actor="bench",
    )
    plan_seconds = time.perf_counter() - t0
    loop_task = asyncio.create_task(orch.run_forever())
    await orch.start(run.id)
    while True:
        current = await store.get_run(run.id)
        assert current is not None
        if current.status in TERMINAL:
            break
        if current.status == RunStatus.AWAITING_ACCEPTANCE:
            await asyncio.sleep(hold)  # the operator's tests
            await orch.accept(run.id, AcceptRequest(note="bench: accepted after --hold"), actor="bench")
            continue
        await asyncio.sleep(0.05)
    loop_task.cancel()
    await asyncio.gather(loop_task, return_exceptions=True)
    steps = await store.steps(run.id)
    ops_per_step: dict[str, int] = {}
    for op_id in sim.ops:
        parts = op_id.split(".")
        if len(parts) >= 3 and parts[1] != "preflight":
            ops_per_step[parts[1]] = ops_per_step.get(parts[1], 0) + 1
    waves = ideal_waves(steps, ops_per_step, step_time)
    upgrade_steps = [s for s in steps if s.phase in ("database_server", "other_servers")]
    lock = next(s for s in steps if s.action == "lock_out")
    back = next(s for s in steps if s.action == "return_to_service")
    gate = next(s for s in steps if s.action == "acceptance")
    lock_min = sum(v for w, v in waves.items() if lock.wave < w < back.wave and w != gate.wave)
    hold_s = _t(gate.finished_at) - _t(gate.started_at)
    others = n - 1
    upgrade_ideal = (1 + math.ceil(others / batch)) * 2 * step_time if others else 2 * step_time
    upgrade_actual = max(_t(s.finished_at) for s in upgrade_steps) - min(
        _t(s.started_at) for s in upgrade_steps
    )
    run_ideal = sum(waves.values())
    run_actual = _t(current.finished_at) - _t(current.started_at)
    # Users locked out: from the lock-out to their return, the acceptance hold (operator time) apart.
    lock_actual = (
        _t(current.context.get("returned_at")) - _t(current.context.get("lockout_started_at")) - hold_s
    )
    await agents.aclose()
    await engine.dispose()
    return {
        "nodes": n,
        "status": current.status.value,
        "steps": len(steps),
        "waves": len(waves),
        "plan_and_preflight_s": round(plan_seconds, 3),
        "upgrade_s": round(upgrade_actual, 3),
        "upgrade_ideal_s": round(upgrade_ideal, 3),
        "upgrade_overhead_pct": round(100 * (upgrade_actual / upgrade_ideal - 1), 2),
        "run_s": round(run_actual, 3),
        "run_ideal_s": round(run_ideal, 3),
        "run_overhead_pct": round(100 * (run_actual / run_ideal - 1), 2),
        "lockout_s": round(lock_actual, 3),
        "lockout_min_s": round(lock_min, 3),
        "lockout_overhead_pct": round(100 * (lock_actual / lock_min - 1), 2),
        "lockout_ratio": round(lock_actual / lock_min, 3),
        "acceptance_hold_s": round(hold_s, 3),
        "estimate": current.context.get("estimate", {}).get("downtime_seconds"),
        "agent_requests": sim.requests,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="100,500")
    ap.add_argument(
        "--hold", type=float, default=1.0, help="seconds the acceptance hold lasts (the operator)"
    )
    ap.add_argument("--step-time", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument(
        "--poll", type=float, default=0.005, help="shortest wait between two looks at an operation"
    )
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        result = asyncio.run(
            one(args.one, step_time=args.step_time, batch=args.batch, poll=args.poll, hold=args.hold)
        )
        print(json.dumps(result))
        return
    rows = []
    for n in [int(x) for x in args.nodes.split(",")]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.upgrade",
                "--one",
                str(n),
                "--step-time",
                str(args.step_time),
                "--batch",
                str(args.batch),
                "--poll",
                str(args.poll),
                "--hold",
                str(args.hold),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(f"N={n} failed")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"N={r['nodes']:>4} {r['status']:<9} steps={r['steps']:>5} waves={r['waves']:>3} | "
            f"upgrade {r['upgrade_s']:>7.2f}s vs ideal {r['upgrade_ideal_s']:>6.2f}s "
            f"({r['upgrade_overhead_pct']:+.1f}%) | run {r['run_s']:>7.2f}s vs {r['run_ideal_s']:>6.2f}s "
            f"({r['run_overhead_pct']:+.1f}%) | peak RSS {r['peak_rss_mib']} MiB | "
            f"plan+preflight {r['plan_and_preflight_s']}s | agent requests {r['agent_requests']}",
            flush=True,
        )
        print(
            f"       users locked out {r['lockout_s']:>7.2f}s vs critical path {r['lockout_min_s']:>7.2f}s "
            f"= {r['lockout_ratio']:.3f}x "
            f"(target <= 1.1x: {'met' if r['lockout_ratio'] <= 1.1 else 'NOT met'})",
            flush=True,
        )
        print(f"       acceptance hold {r['acceptance_hold_s']:.2f}s (excluded above)", flush=True)
    target = next((r for r in rows if r["nodes"] == 500), None)
    if target is not None:
        ok = target["upgrade_overhead_pct"] < 5
        print(
            f"target: upgrade overhead at N=500 under 5%: {'met' if ok else 'NOT met'} "
            f"({target['upgrade_overhead_pct']:+.2f}%)"
        )
    print(f"step time {args.step_time}s, batch {args.batch}, poll {args.poll}s")


if __name__ == "__main__":
    main()
