"""A small fake controller for the client commands: routes of DESIGN.md's controller contract
answered from a dict, every request recorded, served through ``httpx.MockTransport``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from typer.testing import CliRunner, Result

from crmcluster.cli import app
from crmcluster.client_commands import ClientOptions

URL = "http://controller.test:8700"
TOKEN = "admin-token-0123456789abcdef"

Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "details": None}})


def sse(events: list[tuple[int, str, dict[str, Any]]]) -> bytes:
    return "".join(
        f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n" for i, kind, data in events
    ).encode()


CLUSTER: dict[str, Any] = {
    "nodes": [
        {
            "name": "crm1",
            "fqdn": "127.0.0.1:9001",
            "agent_url": "http://127.0.0.1:8701",
            "roles": ["database", "replication_engine", "email_manager"],
            "state": "up",
            "weight": 1.0,
            "version": "7.3",
            "logged_on": 2,
            "last_heartbeat": "2026-11-28T23:00:01",
        },
        {
            "name": "crm2",
            "fqdn": "127.0.0.1:9002",
            "agent_url": "http://127.0.0.1:8702",
            "roles": ["indexer"],
            "state": "draining",
            "weight": 1.0,
            "version": "7.3",
            "logged_on": 1,
            "last_heartbeat": "2026-11-28T23:00:02",
        },
    ],
    "sysparams": {
        "server_names": ["crm1", "crm2"],
        "do_load_balancing": False,
        "dtls_server_name": "crm1",
        "fq_server_names": ["127.0.0.1:9001", "127.0.0.1:9002"],
        "http_port": None,
        "outlook_port": None,
        "doc_store": "\\\\files\\library",
        "doc_templates": None,
    },
    "warnings": [{"code": "no_escalation", "message": "no server holds escalation", "nodes": []}],
}


def step(
    sid: str, phase: str, node: str | None, action: str, status: str = "pending", **kw: Any
) -> dict[str, Any]:
    return {
        "id": sid,
        "phase": phase,
        "node": node,
        "action": action,
        "status": status,
        "attempt": 0,
        "op_id": None,
        "started_at": None,
        "finished_at": None,
        "message": None,
    } | kw


def run(status: str, steps: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "id": "r1",
        "status": status,
        "target_version": "2017 R1",
        "from_version": "7.3",
        "created_at": "2026-11-28T23:00:00",
        "preflight": [
            {"name": "license", "status": "ok", "message": "valid for 2017 R1"},
            {"name": "dta_objects", "status": "warning", "message": "2 _dta_ objects"},
        ],
        "plan": steps,
    } | kw


@dataclass
class FakeController:
    """Answers ``(METHOD, path)`` from ``routes``: a response, a JSON value, or a handler."""

    routes: dict[tuple[str, str], Any] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "unauthorized", "admin token required")
        key = (request.method, request.url.path)
        if key not in self.routes:
            return error(404, "not_found", f"no route {request.method} {request.url.path}")
        answer = self.routes[key]
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, Iterator):
            answer = next(answer)
            if isinstance(answer, httpx.Response):
                return answer
        return httpx.Response(200, json=answer)

    def bodies(self, method: str, path: str) -> list[Any]:
        return [
            json.loads(r.content or b"null")
            for r in self.requests
            if r.method == method and r.url.path == path
        ]


def invoke(fake: FakeController | Handler | None, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``crmcluster ARGS`` in-process against ``fake`` (stdout and stderr kept apart)."""
    transport = httpx.MockTransport(fake) if fake is not None else None
    environment = {"CRMCLUSTER_CONTROLLER_URL": URL, "CRMCLUSTER_ADMIN_TOKEN": TOKEN} if env is None else env
    opts = ClientOptions(transport=transport, env=environment, console=Console(width=200, color_system=None))
    return CliRunner().invoke(app, list(args), obj=opts, catch_exceptions=False)
