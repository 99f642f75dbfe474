"""``upgrade watch``: the event stream folded into progress per phase and per server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from crmcluster.client.http import ControllerClient, SseEvent, SseParser, Target
from crmcluster.client.watcher import RunProgress
from tests.cli.fake_controller import TOKEN, URL, FakeController, invoke, run, sse, step


def plan(*statuses: str) -> list[dict[str, Any]]:
    names = [
        ("s1", "freeze", "crm2", "stop_web"),
        ("s2", "backup", "crm1", "backup_database"),
        ("s3", "database", "crm1", "run_installer"),
        ("s4", "servers", "crm2", "run_installer"),
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


EVENTS = sse(
    [
        (1, "step", {"step": "s1", "phase": "freeze", "status": "succeeded"}),
        (2, "step", {"step": {"id": "s2", "status": "succeeded"}}),
        (3, "step", {"step": {"id": "s3", "status": "succeeded"}}),
        (4, "run", {"status": "succeeded"}),
    ]
)


def test_watch_draws_phases_and_servers_and_exits_0_on_success() -> None:
    snaps = snapshots(
        run("running", plan("running", "pending", "pending", "pending")),
        run("running", plan("succeeded", "running", "pending", "pending")),
        run("succeeded", plan("succeeded", "succeeded", "succeeded", "succeeded")),
    )
    result = invoke(fake_run(snaps, EVENTS), "upgrade", "watch", "r1")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "✓ 23:10:00 freeze crm2 stop_web succeeded" in out
    assert "database crm1 run_installer succeeded" in out
    for bar in ("phase freeze", "phase backup", "phase database", "server crm1", "server crm2"):
        assert bar in out
    assert "2/2" in out  # crm1's two steps, crm2's two steps
    assert "upgrade r1 ended succeeded" in out


def test_watch_exits_1_when_the_run_is_restored_and_names_the_failed_step() -> None:
    failed = plan("succeeded", "succeeded", "failed", "pending")
    failed[2]["message"] = "upgrade log: NB must be fixed"
    snaps = snapshots(
        run("running", plan("succeeded", "succeeded", "running", "pending")), run("restored", failed)
    )
    events = sse(
        [(1, "step", {"step": {"id": "s3", "status": "failed"}}), (2, "run", {"status": "restored"})]
    )
    result = invoke(fake_run(snaps, events), "upgrade", "watch", "r1")
    assert result.exit_code == 1
    assert "✗" in result.stdout and "NB must be fixed" in result.stdout
    assert "ended restored" in result.stdout


def test_watch_json_prints_one_event_per_line_then_the_run() -> None:
    snaps = snapshots(
        run("running", plan("running", "pending", "pending", "pending")),
        run("succeeded", plan("succeeded", "succeeded", "succeeded", "succeeded")),
    )
    result = invoke(fake_run(snaps, EVENTS), "upgrade", "watch", "r1", "--json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [ln.get("id") for ln in lines[:-1]] == ["1"]  # the run was seen ended after the first event
    assert lines[-1]["event"] == "end" and lines[-1]["run"]["status"] == "succeeded"


def test_watch_of_an_ended_run_does_not_open_the_stream() -> None:
    fake = fake_run(
        snapshots(run("succeeded", plan("succeeded", "succeeded", "succeeded", "succeeded"))), b""
    )
    result = invoke(fake, "upgrade", "watch", "r1")
    assert result.exit_code == 0
    assert not [r for r in fake.requests if r.url.path.endswith("/events")]


def test_events_reconnect_with_last_event_id_without_real_sleeps() -> None:
    seen_ids: list[str | None] = []
    streams = iter(
        [
            sse([(1, "step", {"n": 1}), (2, "step", {"n": 2})]),
            sse([(3, "run", {"status": "succeeded"})]),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen_ids.append(request.headers.get("last-event-id"))
        return httpx.Response(200, content=next(streams), headers={"content-type": "text/event-stream"})

    naps: list[float] = []
    client = ControllerClient(Target(URL, TOKEN), transport=httpx.MockTransport(handler))
    got = []
    for ev in client.events(
        "/upgrades/r1/events", should_stop=lambda: len(got) >= 2 and got[-1].id == "3", sleep=naps.append
    ):
        got.append(ev)
    assert [e.id for e in got] == ["1", "2", "3"]
    assert seen_ids == [None, "2"]
    assert naps == [0.5]


def test_sse_parser_follows_the_spec() -> None:
    p = SseParser()
    lines = [": comment", "id: 7", "event: step", 'data: {"a":', "data: 1}", "", "data: plain", ""]
    events = [e for e in (p.feed_line(x) for x in lines) if e is not None]
    assert events[0].id == "7" and events[0].event == "step" and events[0].data == {"a": 1}
    assert events[1].event == "message" and events[1].data == "plain" and events[1].id == "7"


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
