"""Health: fall/rise of the active checks, node states from the state DB, slow start, 503."""

from __future__ import annotations

from typing import Any

from balancer.health import HealthTracker
from balancer.selection import MIN_WEIGHT
from tests.balancer.conftest import Crm, FakeClock, set_node

CRM1 = "crm1.example.com"


def test_tracker_falls_after_three_failures_and_rises_after_two_successes() -> None:
    t = HealthTracker(fall=3, rise=2)
    assert t.record(True) is None and t.up  # first check agrees: no change
    assert [t.record(False), t.record(False)] == [None, None] and t.up
    assert t.record(False) is False and not t.up
    assert t.record(True) is None and not t.up
    assert t.record(False) is None  # a failure resets the successes
    assert t.record(True) is None
    assert t.record(True) is True and t.up


def test_tracker_first_check_decides_at_once() -> None:
    t = HealthTracker(fall=3, rise=2)
    assert t.record(False) is False and not t.up


async def test_server_down_after_fall_checks_and_back_after_rise(make_balancer: Any) -> None:
    async with make_balancer() as b:
        await b.refresher.check_health()
        b.health.down.add(CRM1)
        for _ in range(2):
            await b.refresher.check_health()
            assert (await b.servers())["crm1"]["state"] == "up"
        await b.refresher.check_health()
        assert (await b.servers())["crm1"]["state"] == "down"
        assert await b.route(["u1", "u2", "u3"]) == ["crm2", "crm3", "crm2"]
        b.health.down.clear()
        await b.refresher.check_health()
        assert (await b.servers())["crm1"]["state"] == "down"
        await b.refresher.check_health()
        assert (await b.servers())["crm1"]["state"] == "up"
        assert await b.route(["u4"]) == ["crm1"]
        metrics = (await b.client.get("/metrics")).text
        assert 'crmcluster_balancer_health_changes_total{server="crm1",to="down"} 1.0' in metrics
        assert 'crmcluster_balancer_health_changes_total{server="crm1",to="up"} 1.0' in metrics


async def test_health_check_targets_the_logon_page_of_each_server(make_balancer: Any) -> None:
    async with make_balancer() as b:
        await b.refresher.check_health()
        assert sorted(b.health.checked) == sorted([CRM1, "crm2.example.com:8443", "crm3.example.com"])


async def test_controller_states_take_a_server_out(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer() as b:
        for state in ("down", "draining", "maintenance", "upgrading", "no-such-state"):
            await set_node(crm.engine, "crm1", state)
            await b.refresher.refresh_states()
            shown = "down" if state == "no-such-state" else state  # an unknown word is not "up"
            assert (await b.servers())["crm1"]["state"] == shown
            assert await b.route(["u1", "u2"]) == ["crm2", "crm3"], state
            await set_node(crm.engine, "crm1", "up")
            await b.refresher.refresh_states()
            assert await b.route(["u3"]) == ["crm1"], state


async def test_node_row_up_does_not_override_failed_health_checks(make_balancer: Any, crm: Crm) -> None:
    await set_node(crm.engine, "crm1", "up")
    async with make_balancer() as b:
        b.health.down.add(CRM1)
        await b.refresher.check_health()
        assert (await b.servers())["crm1"]["state"] == "down"
        assert await b.route(["u1"]) == ["crm2"]


async def test_no_server_available_is_503_with_retry_after(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer(retry_after=7) as b:
        for name in ("crm1", "crm2", "crm3"):
            await set_node(crm.engine, name, "maintenance")
        await b.refresher.refresh_states()
        r = await b.logon("u1")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "7"
        assert r.headers["content-type"].startswith("text/html")
        assert "not available" in r.text and len(r.text) < 1000
        assert "location" not in r.headers
        metrics = (await b.client.get("/metrics")).text
        assert 'crmcluster_balancer_decisions_total{reason="unavailable"} 1.0' in metrics


async def test_empty_server_list_is_503(make_balancer: Any, crm: Crm) -> None:
    await crm.configure(server_names=[], fq_server_names=[], dtls_server_name=None)
    async with make_balancer() as b:
        assert (await b.logon()).status_code == 503


async def test_slow_start_fills_a_returning_server_gradually(
    make_balancer: Any, crm: Crm, clock: FakeClock
) -> None:
    for i in range(20):
        await crm.logon(f"a{i}", "crm1")
        await crm.logon(f"b{i}", "crm2")
    async with make_balancer(slow_start=30) as b:
        await b.refresher.check_health()
        # crm3 goes down and comes back empty, while crm1 and crm2 hold 20 users each
        b.health.down.add("crm3.example.com")
        for _ in range(3):
            await b.refresher.check_health()
        b.health.down.clear()
        for _ in range(2):
            await b.refresher.check_health()
        assert (await b.servers())["crm3"]["weight"] == MIN_WEIGHT
        # a storm at once: crm3 takes (load+1) <= weight x (others' load+1), not all 30 logons
        first = await b.route([f"s{i}" for i in range(30)])
        assert first.count("crm3") <= 3
        assert abs(first.count("crm1") - first.count("crm2")) <= 1
        # halfway through the slow start it has caught up about halfway
        clock.advance(15)
        assert (await b.servers())["crm3"]["weight"] == 0.5
        await b.route([f"t{i}" for i in range(30)])
        view = await b.servers()
        crm3 = view["crm3"]["pending"]
        peers = view["crm1"]["logged_on"] + view["crm1"]["pending"]
        assert 0.4 * peers <= crm3 + 1 <= 0.5 * (peers + 1) + 1
        # after the slow start it is judged on its load alone and takes the next logons
        clock.advance(15)
        assert (await b.servers())["crm3"]["weight"] == 1.0
        assert (await b.route(["z1", "z2"])) == ["crm3", "crm3"]


async def test_servers_present_at_start_do_not_ramp(make_balancer: Any) -> None:
    async with make_balancer(slow_start=30) as b:
        assert [s["weight"] for s in (await b.servers()).values()] == [1.0, 1.0, 1.0]


async def test_a_newly_added_server_gets_slow_start_and_is_checked_at_once(
    make_balancer: Any, crm: Crm
) -> None:
    for i in range(10):
        await crm.logon(f"a{i}", "crm1")
    async with make_balancer(slow_start=30) as b:
        await crm.configure(
            server_names=["crm1", "crm2", "crm3", "crm4"],
            fq_server_names=[
                "crm1.example.com",
                "crm2.example.com:8443",
                "crm3.example.com",
                "crm4.example.com",
            ],
        )
        b.health.checked.clear()
        await b.refresher.refresh_config()
        assert b.health.checked == ["crm4.example.com"]
        assert (await b.servers())["crm4"]["weight"] == MIN_WEIGHT
        routed = await b.route([f"u{i}" for i in range(20)])
        assert routed.count("crm4") <= 1


async def test_controller_weight_caps_the_slow_start(make_balancer: Any, crm: Crm) -> None:
    for i in range(10):
        await crm.logon(f"a{i}", "crm1")
        await crm.logon(f"b{i}", "crm2")
    async with make_balancer() as b:
        await set_node(crm.engine, "crm3", "up", weight=0.5)
        await b.refresher.refresh_states()
        assert (await b.servers())["crm3"]["weight"] == 0.5
        routed = await b.route([f"u{i}" for i in range(6)])
        assert routed.count("crm3") == 5  # crm3 fills to half of its peers' load: (5+1) <= 0.5 x (11+1)


async def test_no_slow_start_without_peers(make_balancer: Any, crm: Crm) -> None:
    await crm.configure(server_names=[], fq_server_names=[])
    async with make_balancer(slow_start=30) as b:
        await crm.configure(
            server_names=["crm1", "crm2"], fq_server_names=["crm1.example.com", "crm2.example.com"]
        )
        await b.refresher.refresh_config()  # servers added to an empty pool: nobody to protect
        assert [s["weight"] for s in (await b.servers()).values()] == [1.0, 1.0]
        # every server down, then one back: it is alone, so it takes logons at full weight
        b.health.down.update({"crm1.example.com", "crm2.example.com"})
        await b.refresher.check_health()
        await b.refresher.check_health()
        await b.refresher.check_health()
        assert (await b.logon()).status_code == 503
        b.health.down.discard("crm1.example.com")
        await b.refresher.check_health()
        await b.refresher.check_health()
        assert (await b.servers())["crm1"]["weight"] == 1.0
