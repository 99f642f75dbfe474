"""Balancer replicas share their pending logons through the state database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select

from config.state_schema import balancer_pending, utcnow
from tests.balancer.conftest import Crm


async def test_two_replicas_spread_logons_as_one(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer(replica_id="lb-a") as a, make_balancer(replica_id="lb-b") as b:
        assert await a.route(["u1", "u2"]) == ["crm1", "crm2"]
        await a.refresher.refresh_states()  # a publishes
        await b.refresher.refresh_states()  # b reads
        assert {n: s["pending"] for n, s in (await b.servers()).items()} == {"crm1": 1, "crm2": 1, "crm3": 0}
        assert await b.route(["u3"]) == ["crm3"]
        await b.refresher.refresh_states()
        await a.refresher.refresh_states()
        assert await a.route(["u4"]) == ["crm1"]


async def test_a_peers_logon_counts_once_after_its_row_appears(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer(replica_id="lb-a") as a, make_balancer(replica_id="lb-b") as b:
        assert await a.route(["u1"]) == ["crm1"]
        await a.refresher.refresh_states()
        await crm.logon("u1", "crm1")
        await a.refresher.refresh_counts()  # a retires its pending logon ...
        await a.refresher.refresh_states()  # ... and says so
        await b.refresher.refresh_counts()
        await b.refresher.refresh_states()
        crm1 = (await b.servers())["crm1"]
        assert (crm1["logged_on"], crm1["pending"]) == (1, 0)


async def test_rows_of_a_stopped_replica_are_ignored(make_balancer: Any, crm: Crm) -> None:
    async with crm.engine.begin() as conn:
        await conn.execute(
            insert(balancer_pending),
            [
                {
                    "replica": "gone",
                    "server": "crm1",
                    "pending": 50,
                    "updated_at": utcnow() - timedelta(minutes=1),
                },
                {
                    "replica": "old",
                    "server": "crm1",
                    "pending": 9,
                    "updated_at": utcnow() - timedelta(hours=1),
                },
                {"replica": "live", "server": "crm2", "pending": 2, "updated_at": utcnow()},
            ],
        )
    async with make_balancer(replica_id="lb-a") as a:
        assert {n: s["pending"] for n, s in (await a.servers()).items()} == {"crm1": 0, "crm2": 2, "crm3": 0}
        assert await a.route(["u1", "u2"]) == ["crm1", "crm3"]
        await a.refresher.refresh_states()
        async with crm.engine.connect() as conn:
            replicas = set((await conn.execute(select(balancer_pending.c.replica))).scalars())
        assert replicas == {"gone", "live", "lb-a"}  # an hour-old row is deleted


async def test_sharing_can_be_turned_off(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer(replica_id="lb-a", share_pending=False) as a:
        await a.route(["u1"])
        await a.refresher.refresh_states()
        async with crm.engine.connect() as conn:
            assert (await conn.execute(select(balancer_pending))).all() == []
