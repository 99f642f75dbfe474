"""schemathesis against the OpenAPI of all three services, each served by uvicorn on 127.0.0.1:
every operation gets a bounded number of generated requests (valid and invalid ones), and every
check is on — no 5xx, every status and header documented, every body as its schema says, invalid
input refused, valid input taken, a request without its token refused, 405 with a true ``Allow``.

Examples are bounded and derandomised (the same requests on every run) so each service's run stays
well under a minute on a slow machine. Nothing leaves this machine: the controller reaches agents
through a transport that refuses every connection, the agent is a sandbox in a temporary folder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks as st_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from balancer.app import create_app as balancer_app
from config.settings import AgentSettings, BalancerSettings, ControllerSettings
from controller.app import create_app as controller_app
from node_agent.app import create_app as agent_app
from tests.security.served import Served

pytestmark = pytest.mark.slow

#: Every check schemathesis has (but response time: a slow CI machine is no bug).
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
    st_checks.positive_data_acceptance,
    st_checks.missing_required_header,
    st_checks.unsupported_method,
    st_checks.ignored_auth,
    st_checks.allow_header_conformance,
    st_checks.use_after_free,
    st_checks.ensure_resource_availability,
]
#: Generated requests per operation: (valid, invalid). The controller has some 45 operations.
EXAMPLES = {"controller": (5, 4), "agent": (25, 6), "balancer": (10, 8)}
TOKEN = "fuzz-admin-" + "0" * 24
#: A guard against a run that grows unbounded: the examples above take some 15-25 s per service
#: here (2 cores), well under a minute; a CI machine under coverage is given some room.
BUDGET = 90.0


#: The controller and the agent keep rules no JSON Schema can say — a cluster's invariants, a URL
#: that parses, a UNC path on the library's share, a Windows path that aliases nothing (NFKC,
#: device names, trailing dots, control characters), 1.0 is not an integer — and answer a
#: schema-valid request that breaks one 422 ("the request breaks a rule", with which and why).
RULES_BEYOND_SCHEMA = {
    "checks": {
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
        }
    }
}


def fuzz(
    base_url: str,
    headers: dict[str, str],
    *,
    skip: Callable[[str, str], bool] = lambda m, p: False,
    config: dict[str, Any] | None = None,
    examples: tuple[int, int],
) -> None:
    """Run every operation of the service's OpenAPI; fail naming each operation that failed."""
    spec = httpx.get(base_url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec, config=SchemathesisConfig.from_dict(config or {}))
    failures: list[str] = []
    started = time.monotonic()
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails here, loudly
        if skip(operation.method.upper(), operation.path):
            continue
        for mode, count in zip((GenerationMode.POSITIVE, GenerationMode.NEGATIVE), examples, strict=True):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=count,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=15)

            try:
                check()
                ran += 1
            except Unsatisfiable:
                continue  # no invalid request exists for an operation without parameters
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every failure is reported together
                failures.append(
                    f"{operation.method.upper()} {operation.path} ({mode.value}): {str(exc)[:1500]}"
                )
    elapsed = time.monotonic() - started
    assert ran > 0
    assert not failures, "\n\n".join(failures)
    assert elapsed < BUDGET, f"the run took {elapsed:.0f} s"


@pytest.fixture
def fernet_key() -> str:
    return Fernet.generate_key().decode()


def refuse_all(_url: str) -> httpx.AsyncBaseTransport:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused (fuzzing: no agent is reached)", request=request)

    return httpx.MockTransport(refused)


@pytest.fixture
def controller_url(tmp_path: Path, fernet_key: str) -> Iterator[str]:
    s = ControllerSettings(
        _env_file=None,
        admin_token=TOKEN,
        secret_key=fernet_key,
        data_dir=tmp_path,
        auth_max_failures=10_000,  # ignored_auth sends requests without a token on purpose
        agent_unreachable_grace=0.2,
        agent_request_timeout=1.0,
    )
    with Served(controller_app(s, agent_transport_for=refuse_all, watch=False)) as url:
        yield url


@pytest.fixture
def agent_url(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "library").mkdir()
    s = AgentSettings(
        _env_file=None,
        name="crm1",
        agent_token=TOKEN,
        data_dir=tmp_path / "crm1",
        crm_db_url=f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}",
        sandbox_roles="database,replication_engine",
        sandbox_library_root=tmp_path / "library",
        auth_max_failures=10_000,
    )
    with Served(agent_app(s, background=False)) as url:
        yield url


async def seed_balancer_databases(url: str) -> None:
    """Three servers up in ServerNames (the balancer has somewhere to send a logon)."""
    from config.crm_schema import create_embedded_crm_tables, crm_tables
    from config.database import make_engine
    from config.migrate import migrate
    from config.sysparams import SysParamsStore
    from tests.balancer.conftest import set_node

    engine = make_engine(url)
    try:
        tables = crm_tables()
        await create_embedded_crm_tables(engine, tables)
        await migrate(engine)
        async with engine.begin() as conn:
            await SysParamsStore(tables, BalancerSettings(_env_file=None).sysparam_row_names()).write(
                conn,
                {
                    "server_names": ["crm1", "crm2"],
                    "fq_server_names": ["crm1.example.com", "crm2.example.com:8443"],
                    "do_load_balancing": False,
                },
            )
        for name in ("crm1", "crm2"):
            await set_node(engine, name, "up")
    finally:
        await engine.dispose()


@pytest.fixture
def balancer_url(tmp_path: Path) -> Iterator[str]:
    db = f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}"
    asyncio.run(seed_balancer_databases(db))
    s = BalancerSettings(
        _env_file=None,
        admin_token=TOKEN,
        crm_db_url=db,
        state_db_url=db,
        data_dir=tmp_path,
        auth_max_failures=10_000,
        slow_start=0.0,
    )
    healthy = httpx.MockTransport(lambda _r: httpx.Response(200, text="<form>logon</form>"))
    with Served(balancer_app(s, background=False, health_transport=healthy)) as url:
        yield url


def test_controller_answers_as_its_openapi_says(controller_url: str) -> None:
    # The event stream never ends by itself: a fuzzer would wait on it (tested in tests/upgrade).
    fuzz(
        controller_url,
        {"Authorization": f"Bearer {TOKEN}"},
        examples=EXAMPLES["controller"],
        skip=lambda m, p: p.endswith("/events"),
        config=RULES_BEYOND_SCHEMA,
    )


def test_agent_answers_as_its_openapi_says(agent_url: str) -> None:
    fuzz(
        agent_url,
        {"Authorization": f"Bearer {TOKEN}"},
        examples=EXAMPLES["agent"],
        config=RULES_BEYOND_SCHEMA,
    )
    # The params of each action have their own schema: generated requests reached operations.
    ran = httpx.get(agent_url + "/v1/operations", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert len({op["action"] for op in ran}) >= 10, ran


def test_balancer_answers_as_its_openapi_says(balancer_url: str) -> None:
    spec = httpx.get(balancer_url + "/openapi.json", timeout=10).json()
    assert {"/crm", "/crm/", "/crm/eware.dll/Logon", "/api/v1/servers", "/metrics"} <= set(spec["paths"])
    fuzz(balancer_url, {"Authorization": f"Bearer {TOKEN}"}, examples=EXAMPLES["balancer"])
