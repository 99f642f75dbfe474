"""config.logs: one line per event, JSON off a terminal and text on one, the task's context on
every line, secrets redacted, and request ids taken from (and given back in) HTTP headers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from config import logs
from config.secrets import register_secret


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def lines(buf: io.StringIO) -> list[str]:
    return [ln for ln in buf.getvalue().splitlines() if ln]


def test_json_lines_carry_the_context_and_no_secret(restore_root: None) -> None:
    buf = io.StringIO()  # not a terminal: JSON
    logs.configure(level="info", fmt="auto", service="controller", stream=buf)
    secret = "lic-" + "9" * 20
    register_secret(secret)
    log = logging.getLogger("crmcluster.test.logs")
    with logs.bound(run_id="up-1", op_id="up-1.s3.0"):
        log.info("step %s started with %s", "s3", secret, extra={"node": "crm2", "key": secret})
    log.debug("not shown at info")
    try:
        raise ValueError(f"boom {secret}")
    except ValueError:
        log.exception("it failed")
    out = lines(buf)
    assert len(out) == 2  # one line per event, the traceback included
    first, second = (json.loads(x) for x in out)
    assert first["event"] == "step s3 started with ***"
    assert (first["run_id"], first["op_id"], first["node"], first["key"]) == (
        "up-1",
        "up-1.s3.0",
        "crm2",
        "***",
    )
    assert first["service"] == "controller" and first["level"] == "info"
    assert first["logger"] == "crmcluster.test.logs" and first["timestamp"].endswith("Z")
    assert "run_id" not in second  # the block's context is gone after it
    assert "ValueError: boom ***" in second["exception"] and secret not in out[1]


def test_text_on_a_terminal(restore_root: None) -> None:
    tty = Tty()
    logs.configure(level="info", fmt="auto", service="agent", static={"node": "crm2"}, stream=tty)
    with logs.bound(op_id="op-7"):
        logging.getLogger("crmcluster.test.logs").warning("IIS stopped")
    (line,) = lines(tty)
    assert not line.startswith("{")
    assert "[warning" in line and "IIS stopped" in line and "op_id=op-7" in line and "node=crm2" in line


def test_the_format_can_be_chosen(restore_root: None) -> None:
    tty = Tty()
    logs.configure(fmt="json", stream=tty)
    logging.getLogger("crmcluster.test").info("x")
    assert json.loads(lines(tty)[0])["event"] == "x"
    buf = io.StringIO()
    logs.configure(fmt="text", stream=buf)
    logging.getLogger("crmcluster.test").info("y")
    assert not lines(buf)[0].startswith("{")


def test_uvicorn_lines_go_through_the_same_handler(restore_root: None) -> None:
    buf = io.StringIO()
    uv = logging.getLogger("uvicorn.error")
    uv.addHandler(logging.StreamHandler(io.StringIO()))  # uvicorn's own, which would double lines
    logs.configure(fmt="json", stream=buf)
    uv.warning("Started server process")  # (its level is uvicorn's own to set)
    assert not uv.handlers and [json.loads(x)["logger"] for x in lines(buf)] == ["uvicorn.error"]


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ("3f2a-9c", True),
        ("up-1.s3.0:x~y", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("id\nforged line", False),
        ('x"}', False),
    ],
)
def test_only_plain_ids_are_taken_from_headers(raw: str, ok: bool) -> None:
    assert (logs.clean_id(raw) == raw) is ok


async def test_request_context_binds_and_answers_the_request_id() -> None:
    app = FastAPI()
    app.add_middleware(
        logs.RequestContext, request_id_header="X-Request-ID", headers={"X-CRMCluster-Run-ID": "run_id"}
    )

    @app.get("/ids")
    async def ids() -> dict[str, str]:
        return logs.current()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/ids", headers={"X-Request-ID": "req-1", "X-CRMCluster-Run-ID": "up-9"})
        assert r.json() == {"request_id": "req-1", "run_id": "up-9"}
        assert r.headers["x-request-id"] == "req-1"
        r = await c.get("/ids", headers={"X-Request-ID": "bad\tid"})
        made = r.json()["request_id"]
        assert made != "bad\tid" and len(made) == 32 and r.headers["x-request-id"] == made
        assert "run_id" not in r.json()
    assert logs.current() == {}  # nothing leaks out of a request
