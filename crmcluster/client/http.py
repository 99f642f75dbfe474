"""A small synchronous client for the controller's REST API (``/api/v1``), and its errors.

    client = ControllerClient(Target(url="http://127.0.0.1:8700", token=...))
    cluster = client.get("/cluster")
    for event in client.events(f"/upgrades/{run_id}/events"):
        ...

Every call carries ``Authorization: Bearer <token>``. The transport is injectable
(``httpx.MockTransport`` in tests). Errors are translated at this boundary into one
hierarchy whose messages are single lines fit to show a person:

    ClientError                 anything that stops a command (exit code 1)
    ├── ControllerUnreachable   connection refused, DNS, time-out: temporary
    └── ApiFailure              the controller answered 4xx/5xx; ``status``, ``code``, ``details``
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from config.secrets import redact

API_PREFIX = "/api/v1"


class ClientError(Exception):
    """A command cannot go on; ``str(exc)`` is one line for a person."""


class ControllerUnreachable(ClientError):
    """The controller did not answer (connection refused, DNS failure, time-out)."""


class ApiFailure(ClientError):
    """The controller answered with an error (its JSON error shape, or something else)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Target:
    """Where the controller is and how to sign in to it."""

    url: str
    token: str
    source: str = "environment"


@dataclass
class SseEvent:
    """One server-sent event: ``id`` (the last id the stream gave, as the spec keeps it), ``event``
    (kind) and ``data`` (JSON when it parses)."""

    id: str | None
    event: str
    data: Any
    raw: str = ""


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _error_from(response: httpx.Response) -> ApiFailure:
    code, message, details = "http_error", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
        details = err.get("details")
    elif isinstance(body, dict) and "detail" in body:
        message = str(body["detail"])
    if not message:
        text = " ".join(response.text.split())[:200]
        message = text or response.reason_phrase or "error"
    return ApiFailure(response.status_code, code, redact(message), details)


class ControllerClient:
    """Calls the controller's API; one instance per command. Close it (or use ``with``)."""

    def __init__(
        self,
        target: Target,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.target = target
        self._http = httpx.Client(
            base_url=target.url.rstrip("/"),
            headers={"Authorization": f"Bearer {target.token}", "User-Agent": "crmcluster-cli"},
            transport=transport,
            timeout=timeout,
        )

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _url(self, path: str) -> str:
        return path if path.startswith(("/healthz", "/metrics", API_PREFIX)) else API_PREFIX + path

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        accept: str = "application/json",
    ) -> httpx.Response:
        try:
            response = self._http.request(method, self._url(path), json=json_body, headers={"Accept": accept})
        except httpx.TimeoutException as exc:
            raise ControllerUnreachable(
                f"the controller at {self.target.url} did not answer in time"
            ) from exc
        except httpx.TransportError as exc:
            raise ControllerUnreachable(
                f"cannot reach the controller at {self.target.url} ({type(exc).__name__}: {exc})"
            ) from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def call(self, method: str, path: str, json_body: Any = None) -> Any:
        """One API call; the decoded JSON answer (``None`` for an empty body)."""
        response = self.request(method, path, json_body=json_body)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiFailure(response.status_code, "not_json", "the controller's answer is not JSON") from exc

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, json_body: Any = None) -> Any:
        return self.call("POST", path, json_body)

    def put(self, path: str, json_body: Any = None) -> Any:
        return self.call("PUT", path, json_body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def text(self, path: str, *, accept: str) -> str:
        return self.request("GET", path, accept=accept).text

    def events(
        self,
        path: str,
        *,
        last_event_id: str | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        reconnect_delay: float = 0.5,
        max_reconnects: int = 20,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[SseEvent]:
        """Follow a server-sent event stream, reconnecting with ``Last-Event-ID`` when it drops.

        The stream is parsed by ``httpx-sse``; the ids and the reconnection delay are kept here,
        across connections: ``reconnect_delay`` until the server sends its own (``retry:``).
        Stops when ``should_stop()`` turns true after an event or a closed stream, or after
        ``max_reconnects`` consecutive connections that brought nothing new.
        """
        last_id = last_event_id
        delay = reconnect_delay
        idle = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            got_any = False
            try:
                with connect_sse(self._http, "GET", self._url(path), headers=headers, timeout=None) as source:
                    resp = source.response
                    if resp.status_code >= 400:
                        resp.read()
                        raise _error_from(resp)
                    for sse in source.iter_sse():
                        if sse.retry is not None:
                            delay = sse.retry / 1000
                        last_id = sse.id or last_id
                        if not sse.data:
                            continue  # a block without data (the retry hint) is no event
                        got_any = True
                        yield SseEvent(
                            id=last_id, event=sse.event, data=_json_or_text(sse.data), raw=sse.data
                        )
                        if should_stop():
                            return
            except SSEError as exc:
                raise ApiFailure(
                    resp.status_code, "not_event_stream", f"{path} is not an event stream"
                ) from exc
            except httpx.TransportError as exc:
                if idle >= max_reconnects:
                    raise ControllerUnreachable(
                        f"lost the event stream from {self.target.url} ({type(exc).__name__})"
                    ) from exc
            if should_stop():
                return
            idle = 0 if got_any else idle + 1
            if idle > max_reconnects:
                raise ControllerUnreachable(f"the event stream at {self.target.url} keeps closing")
            sleep(delay)
