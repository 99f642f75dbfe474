"""Server-sent events replayed with Last-Event-ID; no license key or password in plain text anywhere
the controller or the agents wrote (rows, files, events, checklist, logs)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from config.state_schema import metadata
from tests.upgrade.conftest import DB_PASSWORD, LICENSE, Harness
from tests.upgrade.sandbox import sandbox_cluster
from tests.upgrade.test_sandbox_upgrade import DATABASE


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ": " not in line:
                continue
            k, _, v = line.partition(": ")
            fields[k] = v
        if "event" in fields:
            events.append(
                {
                    "id": int(fields["id"]) if "id" in fields else None,
                    "event": fields["event"],
                    "data": json.loads(fields["data"]),
                }
            )
    return events


async def test_events_follow_the_run_and_replay_from_last_event_id(harness: Harness) -> None:
    h = harness
    h.cluster.faults[("crm2", "run_installer")] = "fail"
    run = await h.plan()
    await h.command(run["id"], "start")
    # Followed live: the stream ends by itself once the run has finished.
    resp = await asyncio.wait_for(h.client.get(f"/api/v1/upgrades/{run['id']}/events"), timeout=60)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert resp.text.startswith("retry: 3000\n\nid: ") and "\r" not in resp.text
    events = parse_sse(resp.text)
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "restored"
    numbered = [e for e in events if e["id"] is not None]
    ids = [e["id"] for e in numbered]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    kinds = {e["event"] for e in numbered}
    assert {"run", "phase", "step", "log", "decision", "preflight"} <= kinds
    decisions = [e["data"]["decision"] for e in numbered if e["event"] == "decision"]
    assert "restore" in decisions and "restore_planned" in decisions
    logs = [e for e in numbered if e["event"] == "log"]
    assert any("Upgrade complete" in line for e in logs for line in e["data"]["lines"])

    middle = ids[len(ids) // 2]
    replay = await h.client.get(
        f"/api/v1/upgrades/{run['id']}/events", headers={"Last-Event-ID": str(middle)}
    )
    again = [e for e in parse_sse(replay.text) if e["id"] is not None]
    assert [e["id"] for e in again] == [i for i in ids if i > middle]
    assert again == [e for e in numbered if e["id"] > middle]
    by_query = await h.client.get(f"/api/v1/upgrades/{run['id']}/events?last_event_id={ids[-1]}")
    assert [e["event"] for e in parse_sse(by_query.text)] == ["end"]


async def test_api_errors_are_json_4xx(harness: Harness) -> None:
    h = harness
    bad = await h.client.post("/api/v1/upgrades", json={"target_version": "9", "license_key": "x" * 10})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
    unknown = await h.client.post(
        "/api/v1/upgrades", json={"target_version": "2017 R1", "license_key": LICENSE, "overrides": ["nope"]}
    )
    assert unknown.status_code == 422 and "nope" in unknown.json()["error"]["message"]
    assert (await h.client.get("/api/v1/upgrades/up-missing")).status_code == 404
    run = await h.plan()
    assert (await h.client.post(f"/api/v1/upgrades/{run['id']}/steps/nope/retry")).status_code == 404
    assert (await h.client.post(f"/api/v1/upgrades/{run['id']}/pause")).status_code == 409
    noauth = await h.client.get("/api/v1/upgrades", headers={"Authorization": "Bearer wrong"})
    assert noauth.status_code == 401
    nologin = await h.client.post(
        "/api/v1/upgrades", json={"target_version": "2017 R1", "license_key": LICENSE}
    )
    assert nologin.status_code == 201
    finding = next(f for f in nologin.json()["preflight"] if f["name"] == "sql_login")
    assert finding["status"] == "fail" and nologin.json()["blocking"] == ["sql_login"]
    await h.command(nologin.json()["id"], "abort")
    listed = await h.client.get("/api/v1/upgrades?status=planned")
    assert [r["id"] for r in listed.json()["upgrades"]] == [run["id"]]
    aborted = await h.command(run["id"], "abort")
    assert aborted["status"] == "aborted"
    assert LICENSE not in json.dumps(listed.json())


async def _dump_state(engine: object) -> str:
    out = []
    async with engine.connect() as conn:  # type: ignore[attr-defined]
        for table in metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                out.append(json.dumps([str(v) for v in row]))
    return "\n".join(out)


@pytest.mark.slow
async def test_no_secret_in_plain_text_anywhere_written(
    db_url: str,
    crm_db_url: str,
    tokens: dict[str, str],
    secret_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [LICENSE, DB_PASSWORD]
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm2": "read_upgrade_log:fail"},
    ) as h:
        run = await h.plan(database=DATABASE, disable_triggers=True)
        await h.command(run["id"], "start")
        done = await h.wait(run["id"], "restored", "failed", "succeeded", timeout=90)
        assert done["status"] == "restored"
        texts = [
            await _dump_state(h.app.state.ctx.state_engine),
            (await h.client.get(f"/api/v1/upgrades/{run['id']}")).text,
            (await h.client.get(f"/api/v1/upgrades/{run['id']}/events")).text,
            (await h.client.get(f"/api/v1/upgrades/{run['id']}/checklist")).text,
            (
                await h.client.get(f"/api/v1/upgrades/{run['id']}/checklist", headers={"Accept": "text/html"})
            ).text,
            "\n".join(r.getMessage() for r in caplog.records),
        ]
        row = await _dump_state(h.app.state.ctx.state_engine)
        assert "gAAAAA" in row  # the secrets are kept, encrypted (Fernet)
        for text in texts:
            for secret in secrets:
                assert secret not in text
    # Every file the controller and the agents wrote (journals, backups, SQLite databases, logs).
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path
