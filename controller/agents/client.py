"""Talking to node agents over HTTP with their bearer token (the wire contract is
:mod:`node_agent.protocol`).

Errors, by what the caller should do:

    AgentError
    ├── AgentUnreachable     temporary: connection refused, time-out, 5xx; try again later
    └── AgentRejected        permanent: the agent refused the request (4xx); ``status``/``body``

One request each; following an operation to its end (blips, deadline, cancel) is
:func:`controller.agents.follow.carry_out`::

    client = AgentClient("http://127.0.0.1:8701", token, transport=transport)
    record = await carry_out(client, op_id="run-1:3", action="stop_web", params={}, deadline=now + 120)
    record.result_as(WebResult).web  # ServiceStatus.STOPPED

Every request carries the ids bound to the calling task (request, upgrade run, operation; see
:mod:`config.logs`) as headers, so the agent's log lines name them too.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from config import logs
from node_agent.protocol import (
    OPERATION_ID_HEADER,
    REQUEST_ID_HEADER,
    RUN_ID_HEADER,
    Action,
    NodeStatus,
    OperationRecord,
    Params,
    params_for_wire,
)

#: Gives the token to send, per request (it changes when the node's token is rotated).
TokenSource = Callable[[], Awaitable[str | None]]
#: Gives the TLS context that verifies the agent (its pinned certificate, or the agents' CA);
#: None for plain HTTP. Raises :class:`AgentUnreachable` when an https agent cannot be verified.
VerifySource = Callable[[], Awaitable[ssl.SSLContext | None]]

#: Context fields (:mod:`config.logs`) sent to the agent with every request, and their headers.
CONTEXT_HEADERS = {"request_id": REQUEST_ID_HEADER, "run_id": RUN_ID_HEADER, "op_id": OPERATION_ID_HEADER}


def context_headers() -> dict[str, str]:
    """The ids of what the current task serves, as headers: the agent logs them on its side."""
    bound = logs.current()
    return {header: bound[field] for field, header in CONTEXT_HEADERS.items() if field in bound}


class AgentError(Exception):
    pass


class AgentUnreachable(AgentError):
    retry_after = 1.0


class AgentRejected(AgentError):
    def __init__(self, message: str, *, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class AgentClient:
    """One agent. ``transport`` may be injected (``httpx.ASGITransport`` in tests)."""

    def __init__(
        self,
        base_url: str,
        token: str | TokenSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | VerifySource | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._transport = transport
        self._timeout = timeout
        self._verify = verify
        self._client: httpx.AsyncClient | None = None

    async def _http(self) -> httpx.AsyncClient:
        """The HTTP client, made at first use with the context that verifies this agent."""
        if self._client is None:
            verify: ssl.SSLContext | bool = True
            if self._transport is None and self.base_url.startswith("https://"):
                if isinstance(self._verify, ssl.SSLContext):
                    verify = self._verify
                elif self._verify is not None:  # the pool's: the pinned certificate or the CA
                    given = await self._verify()
                    if given is None:
                        raise AgentUnreachable(f"agent {self.base_url}: no certificate to verify it against")
                    verify = given
            self._client = httpx.AsyncClient(
                base_url=self.base_url, transport=self._transport, timeout=self._timeout, verify=verify
            )
        return self._client

    async def _headers(self) -> dict[str, str]:
        """This agent's own token; none when the node has no token yet (the agent answers 401)."""
        token = self._token if isinstance(self._token, str) else await self._token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            client = await self._http()
            headers = {**context_headers(), **await self._headers()}
            resp = await client.request(method, path, headers=headers, **kw)
        except (httpx.TransportError, OSError) as exc:
            raise AgentUnreachable(f"agent {self.base_url} unreachable: {type(exc).__name__}") from exc
        if resp.status_code >= 500:
            raise AgentUnreachable(f"agent {self.base_url} answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            body = {"error": {"message": resp.text[:200]}}
        if resp.status_code >= 400:
            msg = body.get("error", {}).get("message") if isinstance(body, dict) else None
            raise AgentRejected(
                f"agent {self.base_url} refused {method} {path}: {msg or resp.status_code}",
                status=resp.status_code,
                body=body,
            )
        return body

    async def status(self) -> NodeStatus:
        return NodeStatus.model_validate(await self._request("GET", "/v1/status"))

    async def submit(
        self, op_id: str, action: Action | str, params: Params | dict[str, Any]
    ) -> OperationRecord:
        wire = params_for_wire(params) if isinstance(params, Params) else params
        body = await self._request(
            "POST", "/v1/operations", json={"op_id": op_id, "action": str(action), "params": wire}
        )
        return OperationRecord.model_validate(body)

    async def operation(self, op_id: str) -> OperationRecord | None:
        """The record of ``op_id``, or None when the agent has never seen it."""
        try:
            body = await self._request("GET", f"/v1/operations/{op_id}")
        except AgentRejected as exc:
            if exc.status == 404:
                return None
            raise
        return OperationRecord.model_validate(body)

    async def cancel(self, op_id: str) -> OperationRecord:
        return OperationRecord.model_validate(await self._request("POST", f"/v1/operations/{op_id}/cancel"))

    async def confirm(self, op_id: str, note: str) -> OperationRecord:
        """A person did what the waiting operation asked (the manual installer); 409 when it waits
        for nobody."""
        body = await self._request("POST", f"/v1/operations/{op_id}/confirm", json={"note": note})
        return OperationRecord.model_validate(body)


class AgentPool:
    """Clients by agent URL. Each sends the token of the node registered at its URL
    (``token_for(url)``, :meth:`controller.access.node_tokens.NodeTokens.token_for_url`), so one
    agent's token never reaches another agent; a plain string is one token for all (tests)."""

    def __init__(
        self,
        token_for: Callable[[str], Awaitable[str | None]] | str,
        *,
        token_of_node: Callable[[str], Awaitable[str | None]] | None = None,
        transport_for: Callable[[str], httpx.AsyncBaseTransport | None] | None = None,
        timeout: float = 10.0,
        verify_for: Callable[[str, str | None], Awaitable[ssl.SSLContext | None]] | None = None,
    ) -> None:
        self._verify_for = verify_for
        self._token_for = token_for
        self._token_of_node = token_of_node
        self._transport_for = transport_for or (lambda _url: None)
        self._timeout = timeout
        self._clients: dict[str, AgentClient] = {}

    def client(self, agent_url: str, *, node: str | None = None) -> AgentClient:
        """The client of ``agent_url``; with ``node``, one that sends that node's token (a node
        being registered is not yet known by its URL)."""
        key = f"{agent_url}\0{node or ''}"
        c = self._clients.get(key)
        if c is None:
            token: str | TokenSource
            if isinstance(self._token_for, str):
                token = self._token_for
            elif node is not None and self._token_of_node is not None:
                token = functools.partial(self._token_of_node, node)
            else:
                token = functools.partial(self._token_for, agent_url)
            verify = functools.partial(self._verify_for, agent_url, node) if self._verify_for else None
            c = AgentClient(
                agent_url,
                token,
                transport=self._transport_for(agent_url),
                timeout=self._timeout,
                verify=verify,
            )
            self._clients[key] = c
        return c

    def injected(self, agent_url: str) -> bool:
        """True when tests reach ``agent_url`` in-process (no socket, so no TLS to verify)."""
        return self._transport_for(agent_url) is not None

    def one_off(self, agent_url: str, *, node: str, verify: ssl.SSLContext) -> AgentClient:
        """A client that verifies the agent with ``verify`` (a certificate not pinned yet); close it."""
        token = functools.partial(self._token_of_node, node) if self._token_of_node else self._token_for
        assert not isinstance(token, str) or isinstance(self._token_for, str)
        return AgentClient(agent_url, token, timeout=self._timeout, verify=verify)  # type: ignore[arg-type]

    async def forget(self, agent_url: str) -> None:
        """Close the clients of ``agent_url`` (its certificate changed: the next ones verify anew)."""
        for key in [k for k in self._clients if k.split("\0", 1)[0] == agent_url]:
            await self._clients.pop(key).aclose()

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()
