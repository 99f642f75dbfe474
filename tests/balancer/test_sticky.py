"""Sticky logons by the user's logon name — ``EWARE_USERID``, as Sage CRM's own logon form posts
it, or ``User_Logon`` (DESIGN.md's name); passwords never logged, stored or echoed."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.balancer.conftest import LOGON, Crm


async def test_a_user_with_an_open_session_goes_back_to_its_server(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("alice", "crm3")
    await crm.logon("x", "crm3")
    async with make_balancer() as b:
        assert await b.route(["bob"]) == ["crm1"]
        assert await b.route(["alice", "ALICE ", "bob"]) == ["crm3", "crm3", "crm2"]
        metrics = (await b.client.get("/metrics")).text
        assert 'crmcluster_balancer_decisions_total{reason="sticky"} 2.0' in metrics


async def test_the_newest_open_session_wins(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("alice", "crm1")
    await crm.logon("alice", "crm2")
    async with make_balancer() as b:
        assert await b.route(["alice"]) == ["crm2"]


async def test_no_sticky_after_logoff_or_to_an_unavailable_server(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("alice", "crm3")
    await crm.logon("carol", "crm2")
    await crm.logoff("carol")
    async with make_balancer() as b:
        assert await b.route(["carol"]) == ["crm1"]
        b.health.down.add("crm3.example.com")
        await b.refresher.check_health()
        assert await b.route(["alice"]) == ["crm2"]


async def test_a_get_is_never_sticky(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("alice", "crm3")
    async with make_balancer() as b:
        r = await b.client.get(LOGON, params={"User_Logon": "alice"})
        assert r.headers["x-crm-server"] == "crm1"


async def test_sticky_form_field_among_others_and_with_encoding(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("j.doe@example.com", "crm2")
    async with make_balancer() as b:
        r = await b.client.post(
            LOGON,
            content=b"Mode=1&user_logon=j.doe%40example.com&Password=a%26b%3Dc",
            headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        assert r.headers["x-crm-server"] == "crm2"


async def test_sages_own_logon_form_is_sticky(make_balancer: Any, crm: Crm) -> None:
    """eware.dll's logon page posts EWARE_USERID and PASSWORD (a browser re-sends it to the 307's
    Location), not User_Logon: the balancer must read the field Sage's form has."""
    await crm.logon("alice", "crm3")
    async with make_balancer() as b:
        for form in (
            b"EWARE_USERID=alice&PASSWORD=pw-1&HIDDEN_BrowserType=Other",
            b"eware_userid=ALICE&PASSWORD=pw-1",
            b"EWARE_USERID=alice&User_Logon=alice&PASSWORD=pw-1",
        ):
            r = await b.client.post(
                LOGON, content=form, headers={"content-type": "application/x-www-form-urlencoded"}
            )
            assert r.status_code == 307 and r.headers["x-crm-server"] == "crm3", form
        two = await b.client.post(LOGON, data={"EWARE_USERID": "alice", "User_Logon": "bob"})
        assert two.status_code == 400 and "two users" in two.json()["error"]["message"]
        assert (await b.client.post(LOGON, data={"EWARE_USERID": "", "PASSWORD": "x"})).status_code == 307


async def test_passwords_are_never_logged_or_shown(
    make_balancer: Any, crm: Crm, caplog: pytest.LogCaptureFixture
) -> None:
    await crm.logon("alice", "crm2")
    password = "Tr0ub4dor-and-3"
    caplog.set_level(logging.DEBUG)
    pages: list[str] = []
    async with make_balancer(access_log=True) as b:
        r = await b.client.post(LOGON, data={"User_Logon": "alice", "Password": password})
        assert r.status_code == 307
        r2 = await b.client.post(LOGON, data={"User_Logon": "x" * 300, "Password": password})
        assert r2.status_code == 400
        r3 = await b.client.post(LOGON, data={"EWARE_USERID": "alice", "PASSWORD": password})
        assert r3.status_code == 307 and r3.headers["x-crm-server"] == "crm2"
        pages += [r3.text, str(r3.headers)]
        pages += [r.text, r2.text, str(r.headers), str(r2.headers)]
        pages.append((await b.client.get("/metrics")).text)
        pages.append((await b.client.get("/api/v1/servers")).text)
        pool = b.ctx.pool
        pages.append(repr(pool.sessions) + repr(pool.pending.counts()))
    assert all(password not in p for p in pages)
    assert password not in caplog.text


async def test_new_sessions_are_sticky_at_once_logoffs_at_the_next_full_read(
    make_balancer: Any, crm: Crm, clock: Any
) -> None:
    async with make_balancer(sticky_refresh=5) as b:
        await crm.logon("x1", "crm1")
        await crm.logon("x2", "crm2")
        await crm.logon("alice", "crm3")
        await crm.logon("x3", "crm3")
        await b.refresher.refresh_counts()  # not a full read: the new rows carry the sessions
        assert await b.route(["alice"]) == ["crm3"]
        await crm.logoff("alice")
        await b.refresher.refresh_counts()
        assert await b.route(["alice"]) == ["crm3"]  # the map still has her until the full read
        clock.advance(5)
        await b.refresher.refresh_counts()
        assert await b.route(["alice"]) == ["crm1"]
