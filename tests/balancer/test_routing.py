"""Selection: the guide's example, ties, counts from Activity, pending logons, config changes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.balancer.conftest import Crm, FakeClock


async def test_guide_example_four_users_go_to_1_2_3_1(make_balancer: Any) -> None:
    async with make_balancer() as b:
        assert await b.route(["user1", "user2", "user3", "user4"]) == ["crm1", "crm2", "crm3", "crm1"]


async def test_location_and_header(make_balancer: Any) -> None:
    async with make_balancer() as b:
        r = await b.client.get("/crm/eware.dll/Logon?T=1&Key=abc")
        assert r.status_code == 307
        assert r.headers["location"] == "http://crm1.example.com/crm/eware.dll/Logon?T=1&Key=abc"
        assert r.headers["x-crm-server"] == "crm1"
        r = await b.client.get("/CRM/")
        assert r.headers["location"] == "http://crm2.example.com:8443/crm/eware.dll/Logon"
        r = await b.client.post("/crm/eware.dll/Logon", data={"User_Logon": "x", "Password": "p"})
        assert r.status_code == 307
        assert r.headers["location"] == "http://crm3.example.com/crm/eware.dll/Logon"


async def test_https_scheme_setting(make_balancer: Any) -> None:
    async with make_balancer(scheme="https") as b:
        r = await b.logon()
        assert r.headers["location"].startswith("https://crm1.example.com/crm/")


async def test_counts_come_from_activity_and_ties_go_to_the_earlier_server(
    make_balancer: Any, crm: Crm
) -> None:
    await crm.logon("a", "crm1")
    await crm.logon("b", "crm1")
    await crm.logon("c", "crm2")
    async with make_balancer() as b:
        # crm1 2, crm2 1, crm3 0
        assert await b.route(["u1"]) == ["crm3"]  # crm3 now 0+1: ties with crm2, crm2 is earlier
        assert await b.route(["u2", "u3"]) == ["crm2", "crm3"]
        assert await b.route(["u4", "u5", "u6"]) == ["crm1", "crm2", "crm3"]


async def test_logged_off_and_timed_out_rows_do_not_count(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("a", "crm1")
    await crm.logoff("a")
    await crm.logon("old", "crm1", age=timedelta(hours=3))  # older than the 60 min time-out
    await crm.logon("b", "crm2")
    async with make_balancer() as b:
        body = (await b.client.get("/api/v1/servers")).json()
        servers = {s["name"]: s["logged_on"] for s in body["servers"]}
        assert servers == {"crm1": 0, "crm2": 1, "crm3": 0}
        assert await b.route(["u1"]) == ["crm1"]


async def test_rows_of_servers_not_in_servernames_are_ignored(make_balancer: Any, crm: Crm) -> None:
    for i in range(5):
        await crm.logon(f"x{i}", "oldserver")
    await crm.logon("a", "crm1")
    async with make_balancer() as b:
        body = (await b.client.get("/api/v1/servers")).json()
        assert [s["name"] for s in body["servers"]] == ["crm1", "crm2", "crm3"]
        assert await b.route(["u1", "u2"]) == ["crm2", "crm3"]


async def test_server_names_match_activity_in_any_case(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("a", "CRM1")
    async with make_balancer() as b:
        assert await b.route(["u1"]) == ["crm2"]


async def test_pending_logon_retired_by_its_activity_row_never_counted_twice(
    make_balancer: Any, crm: Crm
) -> None:
    async with make_balancer() as b:
        assert await b.route(["u1"]) == ["crm1"]  # crm1: pending 1
        await crm.logon("u1", "crm1")  # the user's session appears
        await b.refresher.refresh_counts()
        crm1 = (await b.servers())["crm1"]
        assert (crm1["logged_on"], crm1["pending"]) == (1, 0)  # counted once: as a row, no longer pending
        assert await b.route(["u2", "u3"]) == ["crm2", "crm3"]
        await crm.logon("u2", "crm2")
        await crm.logon("u3", "crm3")
        await b.refresher.refresh_counts()
        assert await b.route(["u4"]) == ["crm1"]


async def test_pending_logons_expire(make_balancer: Any, clock: FakeClock) -> None:
    async with make_balancer(pending_ttl=30) as b:
        assert await b.route(["u1", "u2"]) == ["crm1", "crm2"]  # neither ever logs on
        clock.advance(31)
        await b.refresher.refresh_counts()
        servers = (await b.client.get("/api/v1/servers")).json()["servers"]
        assert [s["pending"] for s in servers] == [0, 0, 0]
        assert await b.route(["u3"]) == ["crm1"]


async def test_rows_appearing_after_start_are_counted(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer() as b:
        for i in range(3):
            await crm.logon(f"direct{i}", "crm1")  # users who went to crm1 directly
        await crm.logon("d", "crm2")
        await b.refresher.refresh_counts()
        assert await b.route(["u1"]) == ["crm3"]
        assert await b.route(["u2"]) == ["crm2"]


async def test_concurrent_logons_spread_evenly(make_balancer: Any) -> None:
    async with make_balancer() as b:
        responses = await asyncio.gather(*(b.logon(f"u{i}") for i in range(30)))
        counts: dict[str, int] = {}
        for r in responses:
            assert r.status_code == 307
            counts[r.headers["x-crm-server"]] = counts.get(r.headers["x-crm-server"], 0) + 1
        assert counts == {"crm1": 10, "crm2": 10, "crm3": 10}


async def test_config_change_is_picked_up_live(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer() as b:
        assert await b.route(["u1"]) == ["crm1"]
        await crm.configure(
            server_names=["crm2", "crm4"], fq_server_names=["crm2.example.com:8443", "crm4.example.com"]
        )
        await b.refresher.refresh_config()
        r = await b.logon("u2")
        assert r.headers["x-crm-server"] == "crm2"
        r = await b.logon("u3")
        assert (r.headers["x-crm-server"], r.headers["location"]) == (
            "crm4",
            "http://crm4.example.com/crm/eware.dll/Logon",
        )
        assert list(await b.servers()) == ["crm2", "crm4"]


async def test_invalid_config_keeps_the_last_good_one(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer() as b:
        await crm.set_raw("FQServerNames", "only-one.example.com")  # 1 entry for 3 servers
        assert await b.refresher.refresh_config()
        assert await b.route(["u1", "u2", "u3"]) == ["crm1", "crm2", "crm3"]
        metrics = (await b.client.get("/metrics")).text
        assert 'crmcluster_balancer_config_reloads_total{result="invalid"} 1.0' in metrics


async def test_do_load_balancing_true_sends_everyone_to_the_first_available(
    make_balancer: Any, crm: Crm
) -> None:
    await crm.logon("a", "crm1")
    await crm.configure(do_load_balancing=True)
    async with make_balancer() as b:
        assert await b.route(["u1", "u2", "u3"]) == ["crm1", "crm1", "crm1"]
        b.health.down.add("crm1.example.com")
        await b.refresher.check_health()
        assert await b.route(["u4"]) == ["crm2"]
        await crm.configure(do_load_balancing=False)
        await b.refresher.refresh_config()
        assert await b.route(["u5"]) == ["crm2"]  # crm1 is still down; crm2 and crm3 tie at 0


async def test_per_logon_counts_mode_reads_activity_before_each_decision(
    make_balancer: Any, crm: Crm
) -> None:
    async with make_balancer(counts_mode="per_logon") as b:
        await crm.logon("a", "crm1")
        await crm.logon("b", "crm2")
        assert await b.route(["u1"]) == ["crm3"]  # no refresh by hand: the logon itself read Activity


async def test_a_dtls_server_not_among_the_servers_never_freezes_routing(
    make_balancer: Any, crm: Crm
) -> None:
    """DTLS is not a routing field: a new server list that drops the DTLS server is followed."""
    async with make_balancer() as b:
        await crm.set_raw("DTLSServerName", "crm1")
        await crm.set_raw("ServerNames", "crm2;crm3")
        await crm.set_raw("FQServerNames", "crm2.example.com:8443;crm3.example.com")
        assert await b.refresher.refresh_config()
        assert await b.route(["u1", "u2"]) == ["crm2", "crm3"]
        assert list(await b.servers()) == ["crm2", "crm3"]


async def test_the_clusters_https_switch_wins_over_the_setting(make_balancer: Any, crm: Crm) -> None:
    async with make_balancer() as b:
        await crm.configure(use_https=True, http_port=8443)
        await b.refresh()
        r = await b.client.get("/crm/eware.dll/Logon?T=1")
        # HTTPPort added where the entry names no port; crm2's own port is kept.
        assert r.headers["location"] == "https://crm1.example.com:8443/crm/eware.dll/Logon?T=1"
        assert (await b.logon()).headers["location"] == "https://crm2.example.com:8443/crm/eware.dll/Logon"
        await crm.configure(use_https=False, http_port=80)
        await b.refresh()
        assert (await b.logon()).headers["location"] == "http://crm3.example.com/crm/eware.dll/Logon"
    async with make_balancer(scheme="https") as b:
        await crm.configure(use_https=True, http_port=443)
        await b.refresh()
        assert (await b.logon()).headers["location"].startswith("https://crm1.example.com/crm/")
