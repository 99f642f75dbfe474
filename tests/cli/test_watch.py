"""``upgrade watch``: the event stream folded into progress per phase and per server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crmcluster.client.http import ApiFailure, ControllerClient, SseEvent, Target
from crmcluster.client.watcher import RunProgress
from tests.cli.fake_controller import TOKEN, URL, FakeController, invoke, run, step
from tests.cli.recorded_run import SUCCESS, Recording, record


def plan(*statuses: str) -> list[dict[str, Any]]:
    names = [
        ("s1", "freeze", "crm2", "stop_web"),
        ("s2", "backup", "crm1", "backup_database"),
        ("s3", "database_server", "crm1", "run_installer"),
        ("s4", "other_servers", "crm2", "run_installer"),
    ]
    return [
        step(sid, ph, node, act, st, finished_at=f"2026-11-28T23:10:0{i}" if st != "pending" else None)
        for i, ((sid, ph, node, act), st) in enumerate(zip(names, statuses, strict=True))
    ]


def snapshots(*runs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each GET of the run answers the next snapshot; the last one repeats."""
    last = runs[-1]
    yield from runs
    while True:
        yield last


def fake_run(snaps: Iterator[dict[str, Any]], events: bytes) -> FakeController:
    return FakeController(
        {
            ("GET", "/api/v1/upgrades/r1"): lambda _r: next(snaps),
            ("GET", "/api/v1/upgrades/r1/events"): lambda _r: httpx.Response(
                200, content=events, headers={"content-type": "text/event-stream"}
            ),
        }
    )


def replayed(rec: Recording) -> FakeController:
    """The controller of a recorded run: the snapshots in order, the stream as it was sent."""
    return fake_run(snapshots(*rec.snapshots), rec.streams[0])


def test_watch_draws_phases_and_servers_and_exits_0_on_success(tmp_path: Path) -> None:
    result = invoke(replayed(record(tmp_path, SUCCESS)), "upgrade", "watch", "r1")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "✓ 23:10:03 freeze crm2 stop_web succeeded" in out
    assert "database_server crm1 run_installer succeeded" in out
    assert "other_servers crm2 run_installer succeeded" in out
    for bar in ("phase freeze", "phase backup", "phase database_server", "server crm1", "server crm2"):
        assert bar in out
    assert "2/2" in out  # crm1's two steps, crm2's two steps
    assert "upgrade r1 ended succeeded" in out


def test_watch_exits_1_when_the_run_is_restored_and_names_the_failed_step(tmp_path: Path) -> None:
    moves = [*SUCCESS[:6], ("s3", "running"), ("s3", "failed", "upgrade log: NB must be fixed")]
    rec = record(tmp_path, [*moves, ("run", "restoring"), ("run", "restored")])
    result = invoke(replayed(rec), "upgrade", "watch", "r1")
    assert result.exit_code == 1
    assert "✗" in result.stdout and "NB must be fixed" in result.stdout
    assert "ended restored" in result.stdout


def test_watch_json_prints_one_event_per_line_then_the_run(tmp_path: Path) -> None:
    rec = record(tmp_path, SUCCESS)
    # The run is seen ended at the fetch that follows the first event.
    result = invoke(
        fake_run(snapshots(rec.snapshots[2], rec.snapshots[-1]), rec.streams[0]),
        "upgrade",
        "watch",
        "r1",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    first = rec.ids()[0]
    assert [(ln.get("id"), ln.get("event")) for ln in lines[:-1]] == [(str(first), "run")]
    assert lines[0]["data"]["status"] == "planned"
    assert lines[-1]["event"] == "end" and lines[-1]["run"]["status"] == "succeeded"


def test_watch_of_an_ended_run_does_not_open_the_stream(tmp_path: Path) -> None:
    rec = record(tmp_path, SUCCESS)
    fake = fake_run(snapshots(rec.snapshots[-1]), b"")
    result = invoke(fake, "upgrade", "watch", "r1")
    assert result.exit_code == 0
    assert not [r for r in fake.requests if r.url.path.endswith("/events")]


def test_events_reconnect_with_last_event_id_without_real_sleeps(tmp_path: Path) -> None:
    """The connection drops after an event; the client comes back with its id, after the delay the
    controller asked for (``retry: 3000``), and the controller's replay brings the rest once."""
    rec = record(tmp_path, SUCCESS)
    ids = rec.ids()
    cut = ids[len(ids) // 2]
    seen_ids: list[str | None] = []
    streams = iter([rec.cut_after(cut), rec.streams[cut]])

    def handler(request: httpx.Request) -> httpx.Response:
        seen_ids.append(request.headers.get("last-event-id"))
        return httpx.Response(200, content=next(streams), headers={"content-type": "text/event-stream"})

    naps: list[float] = []
    client = ControllerClient(Target(URL, TOKEN), transport=httpx.MockTransport(handler))
    got: list[SseEvent] = []
    for ev in client.events(
        "/upgrades/r1/events", should_stop=lambda: got[-1].event == "end", sleep=naps.append
    ):
        got.append(ev)
    assert [e.id for e in got if e.event != "end"] == [str(i) for i in ids]
    assert got[-1].event == "end" and got[-1].data == {"status": "succeeded"}
    assert seen_ids == [None, str(cut)]
    assert naps == [3.0]


def test_events_parse_as_the_spec_says() -> None:
    body = b': comment\nid: 7\nevent: step\ndata: {"a":\ndata: 1}\n\nretry: 250\n\ndata: plain\n\n'
    client = ControllerClient(
        Target(URL, TOKEN),
        transport=httpx.MockTransport(
            lambda _r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        ),
    )
    events = list(client.events("/upgrades/r1/events", should_stop=lambda: True))
    assert events[0].id == "7" and events[0].event == "step" and events[0].data == {"a": 1}
    assert len(events) == 1  # stopped after the first
    naps: list[float] = []
    events = []
    for ev in client.events("/upgrades/r1/events", should_stop=lambda: len(naps) > 0, sleep=naps.append):
        events.append(ev)
    assert [(e.id, e.event, e.data) for e in events[:2]] == [
        ("7", "step", {"a": 1}),
        ("7", "message", "plain"),
    ]
    assert naps == [0.25]  # the server's retry hint, in seconds


def test_an_answer_that_is_not_an_event_stream_is_an_api_failure() -> None:
    client = ControllerClient(
        Target(URL, TOKEN), transport=httpx.MockTransport(lambda _r: httpx.Response(200, json={"x": 1}))
    )
    with pytest.raises(ApiFailure, match="not an event stream"):
        list(client.events("/upgrades/r1/events"))


def test_run_progress_counts_per_phase_and_server_and_announces_once() -> None:
    model = RunProgress()
    model.absorb_run(run("running", plan("succeeded", "running", "pending", "pending")))
    phases, nodes = model.phases(), model.nodes()
    assert (phases["freeze"].done, phases["freeze"].total) == (1, 1)
    assert phases["backup"].running == "backup_database"
    assert (nodes["crm1"].done, nodes["crm1"].total, nodes["crm2"].total) == (0, 2, 2)
    again = model.absorb_run(run("running", plan("succeeded", "succeeded", "pending", "pending")))
    assert len(again) == 1 and "backup_database succeeded" in again[0]


def test_steps_left_when_a_run_ends_are_called_not_run() -> None:
    snaps = snapshots(run("aborted", plan("succeeded", "pending", "pending", "pending")))
    result = invoke(fake_run(snaps, b""), "upgrade", "watch", "r1")
    assert result.exit_code == 1
    assert "1 not run" in result.stdout and "ended aborted" in result.stdout


def test_a_replayed_event_never_moves_a_step_back_but_a_retry_does() -> None:
    model = RunProgress()
    model.absorb_run(run("running", plan("succeeded", "running", "pending", "pending")))
    model.absorb_event(SseEvent(id="1", event="step", data={"step": "s1", "status": "running", "attempt": 0}))
    assert model.steps["s1"]["status"] == "succeeded"
    model.absorb_event(SseEvent(id="9", event="step", data={"step": "s2", "status": "failed", "attempt": 0}))
    assert model.steps["s2"]["status"] == "failed"
    model.absorb_event(
        SseEvent(id="10", event="step", data={"step": "s2", "status": "running", "attempt": 1})
    )
    assert model.steps["s2"]["status"] == "running" and model.steps["s2"]["attempt"] == 1


def test_watch_yes_accepts_the_acceptance_hold_and_rollback_names_its_run() -> None:
    held = run("awaiting_acceptance", plan("succeeded", "succeeded", "succeeded", "succeeded"))
    done = run("succeeded", plan("succeeded", "succeeded", "succeeded", "succeeded"))
    state = {"accepted": False}

    def get(_r: httpx.Request) -> dict[str, Any]:
        return done if state["accepted"] else held

    def accept(_r: httpx.Request) -> dict[str, Any]:
        state["accepted"] = True
        return done

    fake = FakeController(
        {
            ("GET", "/api/v1/upgrades/r1"): get,
            ("POST", "/api/v1/upgrades/r1/accept"): accept,
            ("GET", "/api/v1/upgrades/r1/events"): lambda _r: httpx.Response(
                200, content=b"", headers={"content-type": "text/event-stream"}
            ),
        }
    )
    result = invoke(fake, "upgrade", "watch", "r1", "--yes")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert fake.bodies("POST", "/api/v1/upgrades/r1/accept") == [
        {"rows": [], "note": "accepted from the command line (--yes): no test ticked"}
    ]
    assert "ended succeeded" in result.stdout

    missing = invoke(fake, "upgrade", "rollback")  # never the newest run by default
    assert missing.exit_code == 2


def test_accept_sends_the_ticked_rows_and_the_note() -> None:
    fake = FakeController({("POST", "/api/v1/upgrades/r1/accept"): run("running", [])})
    result = invoke(
        fake, "upgrade", "accept", "r1", "--tick", "mail_merge", "--tick", "reports=PDF ok", "--note", "UAT"
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert fake.bodies("POST", "/api/v1/upgrades/r1/accept") == [
        {"rows": ["mail_merge", {"id": "reports", "note": "PDF ok"}], "note": "UAT"}
    ]
