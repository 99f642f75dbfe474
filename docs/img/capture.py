"""Take the tour's screenshots from a running demo (docs/tour.md).

    crmcluster demo --data-dir /tmp/tour &        # wait for /tmp/tour/demo.json
    .venv/bin/python docs/img/capture.py /tmp/tour [--override library]

Writes, next to this file:

- ``dashboard.png``          the dashboard of the idle demo cluster (headless Chromium);
- ``status.png``             ``crmcluster status`` in a 120-column terminal;
- ``upgrade-watch.png``      ``crmcluster upgrade start`` (then watching) in a real terminal
                             (tmux), captured while the run is under way;
- ``dashboard-upgrade.png``  the dashboard during that same upgrade;
- ``checklist.png``          the live part of the run's checklist (HTML), from "Freeze live system".

Terminal captures are real: the ANSI text of the tmux pane (or of the command's output) is
drawn by Rich's SVG export and that SVG photographed by Chromium. Nothing here talks to
anything but the demo on loopback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, sync_playwright
from rich.console import Console
from rich.text import Text

OUT = Path(__file__).resolve().parent
ROOT = OUT.parents[1]
COLS, ROWS = 118, 40
TMUX = ["tmux", "-L", "crmcluster-tour"]
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


def terminal_png(browser: Browser, ansi: str, path: Path, title: str) -> None:
    console = Console(
        record=True, width=COLS, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(Text.from_ansi(ansi.rstrip("\n")), soft_wrap=True)
    svg = console.export_svg(title=title)
    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    page.set_content(f"<html><body style='margin:0;background:#fff'>{svg}</body></html>")
    page.locator("svg").first.screenshot(path=str(path))
    page.close()
    print("wrote", path)


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_")}
    return env | {"COLUMNS": str(COLS), "LINES": str(ROWS), "FORCE_COLOR": "1", "TERM": "xterm-256color"}


def crmcluster(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "crmcluster", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    return proc.stdout


def pane() -> str:
    return subprocess.run(
        [*TMUX, "capture-pane", "-e", "-p", "-t", "tour"], capture_output=True, text=True, check=True
    ).stdout


def progress(page: Page) -> tuple[str, int, int]:
    run = page.locator("#upgrade .run")
    if run.count() == 0:
        return "", 0, 1
    done = int(page.inner_text("#upgrade .run-head .done") or 0)
    total = int(
        page.locator("#upgrade ol.timeline li.phase").evaluate_all(
            "els => els.reduce((n, e) => n + Number(e.dataset.total), 0)"
        )
        or 1
    )
    return str(run.get_attribute("data-status")), done, total


def _midway(text: str) -> float:
    """How well a pane shows a run under way: a running run, about half its phases done."""
    plain = Text.from_ansi(text).plain
    if not any(line.startswith("Upgrade ") and " running " in line for line in plain.splitlines()):
        return -1.0
    phases = [line for line in plain.splitlines() if line.startswith("phase ")]
    if not phases:
        return -1.0
    done = sum(1 for line in phases if line.rstrip().endswith("done"))
    return 1.0 - abs(done / len(phases) - 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("--override", action="append", default=[], help="preflight finding to accept")
    opts = parser.parse_args()
    demo: dict[str, Any] = json.loads((opts.demo_dir / "demo.json").read_text())
    api = httpx.Client(
        base_url=demo["controller_url"] + "/api/v1",
        headers={"Authorization": f"Bearer {demo['admin_token']}"},
        timeout=30,
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 980})
        page.goto(demo["dashboard_url"])
        page.wait_for_selector("#live[data-state='on']")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "dashboard.png"), full_page=True)
        print("wrote", OUT / "dashboard.png")

        terminal_png(
            browser,
            crmcluster("status", "--demo", str(opts.demo_dir)),
            OUT / "status.png",
            "crmcluster status",
        )

        run = api.post(
            "/upgrades",
            json={
                "target_version": "2017 R1",
                "license_key": "DEMO-2017R1-LICENSE",
                "overrides": opts.override,
                "database": {"server": "dbserver", "user": "crmupgrade", "password": "demo-sql-password"},
            },
        ).json()
        page.wait_for_selector(f"#upgrade .run[data-run='{run['id']}']")
        command = (
            f"{sys.executable} -m crmcluster upgrade start {run['id']} --yes "
            f"--demo {opts.demo_dir}; sleep 600"
        )
        subprocess.run([*TMUX, "kill-server"], capture_output=True, check=False)
        subprocess.run(
            [*TMUX, "new-session", "-d", "-s", "tour", "-x", str(COLS), "-y", str(ROWS), command],
            check=True,
            cwd=ROOT,
            env={k: v for k, v in cli_env().items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")},
        )
        mid_pane, shot_mid = "", False
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                status, done, total = progress(page)
                text = pane()
                if _midway(text) > _midway(mid_pane):
                    mid_pane = text
                if status == "running" and 0.3 <= done / total <= 0.85:
                    if not shot_mid:
                        page.screenshot(path=str(OUT / "dashboard-upgrade.png"), full_page=True)
                        print("wrote", OUT / "dashboard-upgrade.png", f"({done}/{total})")
                        shot_mid = True
                if status in ("succeeded", "failed", "restored", "aborted") and "ended" in text:
                    break
                time.sleep(0.15)
            final_pane = pane()
            if not shot_mid:
                page.screenshot(path=str(OUT / "dashboard-upgrade.png"), full_page=True)
            terminal_png(
                browser, mid_pane or final_pane, OUT / "upgrade-watch.png", "crmcluster upgrade start"
            )
            terminal_png(
                browser, final_pane, OUT / "upgrade-watch-end.png", "crmcluster upgrade start (ended)"
            )
        finally:
            subprocess.run([*TMUX, "kill-server"], capture_output=True, check=False)

        html = api.get(f"/upgrades/{run['id']}/checklist", headers={"Accept": "text/html"}).text
        checklist = browser.new_page(viewport={"width": 1100, "height": 900})
        checklist.set_content(html)
        # The live part of the checklist: the freeze, the live backups and the live upgrade.
        box = checklist.get_by_text("Freeze live system", exact=False).first.bounding_box()
        top = max(0, int(box["y"]) - 150) if box else 0
        checklist.screenshot(
            path=str(OUT / "checklist.png"),
            full_page=True,
            clip={"x": 0, "y": top, "width": 1100, "height": 1000},
        )
        print("wrote", OUT / "checklist.png")
        browser.close()


if __name__ == "__main__":
    main()
