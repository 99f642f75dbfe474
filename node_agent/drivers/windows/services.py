"""Windows services through ``sc.exe``: Tomcat and the CRM services, found, moved and controlled
as the administrator would — never deleted and recreated.

- states: ``sc.exe query type= service state= all`` once (every service with its SERVICE_NAME,
  DISPLAY_NAME and STATE), then ``sc.exe qc NAME`` for each CRM service (its START_TYPE: a
  disabled service is not placed on this server);
- moved: ``sc.exe config NAME start= auto`` (placed here) or ``start= disabled`` (taken away):
  the binary path, the run-as account (the customer's, with its access to the UNC library and
  Exchange) and the recovery settings stay as Sage's installer made them;
- started and stopped: ``sc.exe start|stop NAME`` (1056 "already running" and 1062 "not
  started" are fine), then ``sc.exe query NAME`` until it reads RUNNING or STOPPED.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass

from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.host import WindowsHost
from node_agent.protocol import ServiceStatus

SC = "sc.exe"
#: The CRM services' own executables under ``Sage\CRM\Services`` (their ``/U`` removes them: the
#: guide's manual uninstall; QuickFind has none there).
SERVICE_EXES = {
    "indexer": "crmindexerservice.exe",
    "escalation": "crmescalationservice.exe",
    "email_manager": "crmemailmanagerservice.exe",
    "integration": "crmintegrationservice.exe",
}
SC_NOT_INSTALLED = 1060
SC_ALREADY_RUNNING = 1056
SC_NOT_STARTED = 1062
_BLOCK = re.compile(r"^SERVICE_NAME:\s*(?P<name>\S.*?)\s*$", re.M)
_DISPLAY = re.compile(r"^DISPLAY_NAME:\s*(?P<display>.*?)\s*$", re.M)
_STATE = re.compile(r"STATE\s*:\s*\d+\s+(\w+)")
_START_TYPE = re.compile(r"START_TYPE\s*:\s*\d+\s+(\w+)")
_PID = re.compile(r"PID\s*:\s*(\d+)")


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    display_name: str
    state: ServiceStatus


def _state(word: str | None) -> ServiceStatus:
    w = (word or "").upper()
    if w == "RUNNING":
        return ServiceStatus.RUNNING
    if w == "STOPPED":
        return ServiceStatus.STOPPED
    return ServiceStatus.UNKNOWN


def parse_query_all(output: str) -> dict[str, ServiceInfo]:
    """``sc query type= service state= all`` → services by lower-cased SERVICE_NAME."""
    found: dict[str, ServiceInfo] = {}
    starts = [m.start() for m in _BLOCK.finditer(output)] + [len(output)]
    for begin, end in itertools.pairwise(starts):
        block = output[begin:end]
        name_m = _BLOCK.search(block)
        assert name_m is not None
        display = _DISPLAY.search(block)
        state = _STATE.search(block)
        info = ServiceInfo(
            name_m.group("name"),
            display.group("display") if display else "",
            _state(state and state.group(1)),
        )
        found[info.name.lower()] = info
    return found


class ServiceControl:
    """sc.exe for one server."""

    def __init__(self, host: WindowsHost, *, poll: float = 1.0) -> None:
        self.host = host
        self.poll = poll

    async def all(self, ctx: OperationContext | None = None) -> dict[str, ServiceInfo]:
        r = await self.host.query(ctx, [SC, "query", "type=", "service", "state=", "all"])
        return parse_query_all(r.output) if r.returncode == 0 else {}

    async def find(self, name: str, ctx: OperationContext | None = None) -> ServiceInfo | None:
        """The service named ``name`` (its service name or its display name), if installed."""
        services = await self.all(ctx)
        hit = services.get(name.lower())
        if hit is None:
            hit = next((s for s in services.values() if s.display_name.lower() == name.lower()), None)
        return hit

    async def state(self, name: str, ctx: OperationContext | None = None) -> ServiceStatus:
        r = await self.host.query(ctx, [SC, "query", name])
        if r.returncode == SC_NOT_INSTALLED:
            return ServiceStatus.NOT_INSTALLED
        m = _STATE.search(r.output)
        return _state(m.group(1)) if r.returncode == 0 and m else ServiceStatus.UNKNOWN

    async def start_type(self, name: str, ctx: OperationContext | None = None) -> str | None:
        """AUTO_START, DEMAND_START, DISABLED … (None when sc.exe does not say)."""
        r = await self.host.query(ctx, [SC, "qc", name])
        m = _START_TYPE.search(r.output)
        return m.group(1).upper() if r.returncode == 0 and m else None

    async def pid(self, name: str) -> str | None:
        r = await self.host.query(None, [SC, "queryex", name])
        m = _PID.search(r.output)
        return m.group(1) if m else None

    async def placed(self, name: str, ctx: OperationContext | None = None) -> ServiceStatus:
        """The CRM-service view of a service: not installed, or disabled (taken off this server),
        reads ``not_installed``; else its state."""
        state = await self.state(name, ctx)
        if state == ServiceStatus.NOT_INSTALLED:
            return state
        if await self.start_type(name, ctx) == "DISABLED":
            return ServiceStatus.NOT_INSTALLED
        return state

    async def control(
        self, ctx: OperationContext, name: str, verb: str, *, timeout: float = 120
    ) -> ServiceStatus:
        """``sc.exe start|stop NAME``, then wait until it reads RUNNING|STOPPED."""
        ok = (0, SC_ALREADY_RUNNING) if verb == "start" else (0, SC_NOT_STARTED)
        await self.host.run(ctx, [SC, verb, name], ok=ok)
        want = ServiceStatus.RUNNING if verb == "start" else ServiceStatus.STOPPED
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await self.state(name, ctx)
            if state == want:
                return state
            if loop.time() >= deadline:
                raise ActionFailed(f"{name} is still {state.value} after {timeout:.0f}s")
            await asyncio.sleep(self.poll)

    async def set_start(self, ctx: OperationContext, name: str, start: str) -> None:
        """``sc.exe config NAME start= auto|disabled|demand`` — nothing else about it changes."""
        await self.host.run(ctx, [SC, "config", name, "start=", start])
