"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright) against a
running ``crmcluster demo``: every server shown, a drain seen without a reload, an upgrade
progressing on the timeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.demo_process import api, running_demo, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with running_demo(tmp_path_factory.mktemp("dashboard") / "demo") as data:
        yield data


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, demo: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(demo["dashboard_url"])
    pg.wait_for_selector("#live[data-state='on']")
    # A marker that survives only as long as the page is not reloaded.
    pg.evaluate("window.__notReloaded = true")
    try:
        yield pg
    finally:
        context.close()


def not_reloaded(page: Any) -> bool:
    return bool(page.evaluate("window.__notReloaded === true"))


def card_state(page: Any, node: str) -> str:
    return str(page.get_attribute(f"#servers article[data-node='{node}']", "data-state"))


def test_signed_in_link_lands_on_a_clean_url_showing_every_server(page: Any, demo: dict[str, Any]) -> None:
    assert page.url == demo["controller_url"] + "/"  # the token left the address bar
    for node in demo["nodes"]:
        card = page.locator(f"#servers article[data-node='{node['name']}']")
        assert card.count() == 1
        assert card.locator(".version").inner_text() == "7.3"
    assert "Replication Engine" in page.locator("#servers article[data-node='crm1']").inner_text()
    assert page.locator("#distribution svg g.bar").count() == len(demo["nodes"])
    assert demo["admin_token"] not in page.content()


def test_a_drain_shows_without_a_reload(page: Any, demo: dict[str, Any]) -> None:
    with api(demo) as client:
        assert client.post("/nodes/crm2/drain").status_code == 202
        try:
            page.wait_for_selector("#servers article[data-node='crm2'][data-state='draining']")
            assert not_reloaded(page)
            assert page.locator("#audit").inner_text().count("nodes.drain") >= 1
        finally:
            client.post("/nodes/crm2/undrain")
    page.wait_for_selector("#servers article[data-node='crm2'][data-state='up']")
    assert not_reloaded(page)


def test_drain_and_undrain_buttons(page: Any) -> None:
    page.click("#servers article[data-node='crm3'] button[data-action='drain']")
    page.wait_for_selector("#servers article[data-node='crm3'][data-state='draining']")
    page.click("#servers article[data-node='crm3'] button[data-action='undrain']")
    page.wait_for_selector("#servers article[data-node='crm3'][data-state='up']")
    assert not_reloaded(page)


def test_an_upgrade_progresses_on_the_timeline(page: Any, demo: dict[str, Any]) -> None:
    with api(demo) as client:
        planned = client.post(
            "/upgrades",
            json={
                "target_version": "2017 R1",
                "license_key": "DEMO-2017R1-KEY",
                "database": {"server": "dbserver", "user": "crmupgrade", "password": "demo-sql-password"},
            },
        )
        assert planned.status_code in (200, 201), planned.text
        run = planned.json()
        page.wait_for_selector(f"#upgrade .run[data-run='{run['id']}'][data-status='planned']")
        assert client.post(f"/upgrades/{run['id']}/start").status_code == 200
    seen: set[tuple[str, int, int]] = set()

    def progressed() -> bool:
        status = str(page.get_attribute("#upgrade .run", "data-status"))
        done = int(page.inner_text("#upgrade .run-head .done"))
        total = int(page.inner_text("#upgrade .run-head .count").split(" of ")[1].split()[0])
        seen.add((status, done, total))
        return status in ("succeeded", "failed", "restored", "aborted")

    def held() -> bool:
        progressed()
        return bool(page.locator("#upgrade form.acceptance").count() == 1)

    # The acceptance hold, accepted on the page: a row ticked, a note, the button.
    wait_for(held, timeout=240, interval=0.1, what="the acceptance hold on the page")
    assert page.get_attribute("#upgrade .run", "data-status") == "awaiting_acceptance"
    assert page.locator("#upgrade tr[data-row='logon'].status-passed").count() == 1
    page.check("#upgrade tr[data-row='mail_merge'] input[name='rows']")
    page.fill("#upgrade form.acceptance input[name='note']", "tested in the browser")
    page.click("#upgrade form.acceptance button[data-action='accept']")
    wait_for(progressed, timeout=240, interval=0.1, what="the upgrade to end on the page")
    with api(demo) as client:
        ended = client.get(f"/upgrades/{run['id']}").json()
    rows = {r["id"]: r for r in ended["acceptance"]["table"]}
    assert rows["mail_merge"]["status"] == "ticked" and ended["acceptance"]["note"] == "tested in the browser"
    assert page.get_attribute("#upgrade .run", "data-status") == "succeeded", seen
    # The page showed the run under way, part done, before it showed it ended.
    assert any(st == "running" and 0 < done < total for st, done, total in seen), seen
    phases = page.locator("#upgrade ol.timeline li.phase")
    names = [phases.nth(i).get_attribute("data-phase") for i in range(phases.count())]
    assert names[:2] == ["freeze", "backup"] and "database_server" in names
    assert page.locator("#upgrade .np[data-node='crm1'].status-succeeded").count() == 1
    page.wait_for_selector("#servers article[data-node='crm3'] .version:text('2017 R1')")
    assert not_reloaded(page)
