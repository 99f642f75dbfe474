"""The agent-check's answers (node_agent.agent_check), the state the agent keeps of the controller's
(node_agent.assignment), and the TCP port HAProxy asks — here asked by a plain socket; the real
HAProxy is in tests/deploy/test_agent_check.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from config.vocabulary import NodeState
from node_agent.agent_check import AgentCheck, WebHealth, reply
from node_agent.assignment import AssignmentKeeper, AssignmentPoller
from node_agent.protocol import NodeAssignment
from node_agent.testing import running_sandbox_agent


def now() -> datetime:
    return datetime(2026, 11, 28, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "web", "line"),
    [
        (NodeState.UP, True, "up ready 100%"),
        (NodeState.UP, False, "down ready"),
        (NodeState.DOWN, True, "up ready 100%"),  # the controller has not heard lately; IIS runs
        (NodeState.DOWN, False, "down ready"),
        (None, True, "up ready 100%"),  # never heard from a controller: own health only
        (NodeState.DRAINING, True, "up drain"),
        (NodeState.DRAINING, False, "down drain"),
        (NodeState.MAINTENANCE, True, "maint"),
        (NodeState.MAINTENANCE, False, "maint"),
        (NodeState.UPGRADING, True, "maint"),
    ],
)
def test_reply_names_both_the_operational_and_the_administrative_state(
    state: NodeState | None, web: bool, line: str
) -> None:
    assert reply(state=state, web_running=web, weight_percent=100) == line


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeHealth(WebHealth):
    def __init__(self) -> None:
        self.running = True

    async def web_running(self) -> bool:
        return self.running


def keeper(tmp_path: Path) -> AssignmentKeeper:
    return AssignmentKeeper(tmp_path / "assignment.json", clock=now)


async def test_weight_ramps_up_after_the_server_comes_back(tmp_path: Path) -> None:
    clock, health, k = Clock(), FakeHealth(), keeper(tmp_path)
    check = AgentCheck(keeper=k, health=health, slow_start=30, clock=clock)
    k.heard({"state": "up", "weight": 1.0})
    assert await check.answer() == "up ready 100%"  # a fresh agent does not ramp
    k.heard({"state": "maintenance"})
    assert await check.answer() == "maint"
    clock.t += 60
    k.heard({"state": "up"})
    assert await check.answer() == "up ready 1%"
    clock.t += 15
    assert await check.answer() == "up ready 50%"
    clock.t += 15
    assert await check.answer() == "up ready 100%"
    # IIS stops and starts again: another ramp.
    health.running = False
    assert await check.answer() == "down ready"
    health.running = True
    clock.t += 3
    assert await check.answer() == "up ready 1%"
    clock.t += 3
    assert await check.answer() == "up ready 10%"


async def test_the_controllers_weight_caps_the_answer(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    check = AgentCheck(keeper=k, health=FakeHealth(), slow_start=0, clock=Clock())
    k.heard({"state": "up", "weight": 0.25})
    assert await check.answer() == "up ready 25%"
    k.heard({"state": "up", "weight": 0.0})
    assert await check.answer() == "up ready 0%"  # HAProxy shows a zero weight as DRAIN


def test_the_last_assignment_survives_a_restart(tmp_path: Path) -> None:
    first = keeper(tmp_path)
    assert first.heard({"state": "upgrading", "weight": 1, "fenced": False}) is not None
    again = keeper(tmp_path)
    again.load()
    assert again.current == NodeAssignment(state=NodeState.UPGRADING)
    # Not an assignment: ignored, the previous one kept.
    assert again.heard({"state": "sideways"}) is None
    assert again.current is not None and again.current.state == NodeState.UPGRADING
    (tmp_path / "assignment.json").write_text("{not json")
    broken = keeper(tmp_path)
    broken.load()
    assert broken.current is None


async def test_poller_asks_the_controller_and_backs_off_while_it_is_away(tmp_path: Path) -> None:
    answers = [503, 200, "refused", 200]
    seen: list[httpx.Request] = []

    def controller(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        a = answers.pop(0)
        if a == "refused":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(int(str(a)), json={"state": "draining", "weight": 1, "fenced": False})

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if not answers:
            raise asyncio.CancelledError

    k = keeper(tmp_path)
    poller = AssignmentPoller(
        controller_url="http://controller:8700/",
        name="crm2",
        token="agt-0123456789abcdef",
        keeper=k,
        interval=1,
        max_backoff=10,
        transport=httpx.MockTransport(controller),
        sleep=sleep,
        jitter=0,
    )
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert waits == [2, 1, 2, 1]
    assert str(seen[0].url) == "http://controller:8700/api/v1/agents/crm2/state"
    assert seen[0].headers["authorization"] == "Bearer agt-0123456789abcdef"
    assert k.current is not None and k.current.state == NodeState.DRAINING
    assert json.loads((tmp_path / "assignment.json").read_text())["state"] == "draining"


async def ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def answered(port: int, expected: bytes, *, within: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while await ask(port) != expected:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_the_agent_answers_on_its_agent_check_port(
    tmp_path: Path, sqlite_url: str, tokens: dict[str, str]
) -> None:
    async with running_sandbox_agent(
        name="crm2",
        data_dir=tmp_path / "crm2",
        crm_db_url=sqlite_url,
        token=tokens["agent"],
        agent_check_port=0,
        agent_check_host="127.0.0.1",
    ) as agent:
        port = agent.app.state.agent_check.port
        assert await ask(port) == b"up ready 100%\n"  # no controller: its own health
        agent.app.state.assignment.heard({"state": "draining"})
        assert await ask(port) == b"up drain\n"
        record = await agent.run("stop-web-1", "stop_web")
        assert record.state == "succeeded"
        # IIS's state is looked at no more than once a second.
        assert await answered(port, b"down drain\n", within=3)
        # Several HAProxies at once are all answered.
        answers = await asyncio.gather(*(ask(port) for _ in range(20)))
        assert set(answers) == {b"down drain\n"}
    with pytest.raises(OSError):
        await ask(port)  # closed with the agent


async def test_no_port_unless_asked(tmp_path: Path, sqlite_url: str, tokens: dict[str, str]) -> None:
    async with running_sandbox_agent(
        name="crm2", data_dir=tmp_path / "crm2", crm_db_url=sqlite_url, token=tokens["agent"]
    ) as agent:
        assert agent.app.state.agent_check is None
