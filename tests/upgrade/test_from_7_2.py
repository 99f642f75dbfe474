"""A Sage CRM 7.2 cluster: ``crmcluster demo --from-version 7.2`` plans one, and the sandbox
cluster at 7.2 goes to 2017 R1 in one run, as the guide says the wizard does ("The install wizard
upgrades from 7.2 or 7.3 to 2017 R1")."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmcluster.demo import DemoError, agent_spec, banner, demo_document, make_plan
from tests.upgrade.sandbox import sandbox_cluster
from tests.upgrade.test_sandbox_upgrade import DATABASE

SEVEN_TWO = {"crm1": "7.2", "crm2": "7.2", "crm3": "7.2"}


def test_the_demo_starts_at_7_2_when_asked(tmp_path: Path) -> None:
    plan = make_plan(
        nodes=2,
        data_dir=tmp_path,
        ports="auto",
        faults=[],
        host="127.0.0.1",
        controller_port=None,
        balancer_port=None,
        version="7.2",
    )
    plan.node_tokens = {n.name: "t" * 32 for n in plan.nodes}
    assert plan.version == "7.2"
    assert {agent_spec(plan, n).env["CRMCLUSTER_SANDBOX_VERSION"] for n in plan.nodes} == {"7.2"}
    assert banner(plan, {}).startswith("Sage CRM 7.2 demo cluster is up")
    assert demo_document(plan, {})["version"] == "7.2"
    with pytest.raises(DemoError, match="--from-version 2017 R1"):
        make_plan(
            nodes=1,
            data_dir=tmp_path,
            ports="auto",
            faults=[],
            host="127.0.0.1",
            controller_port=None,
            balancer_port=None,
            version="2017 R1",
        )


async def test_a_7_2_cluster_goes_to_2017_r1_in_one_run(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        versions=SEVEN_TWO,
    ) as h:
        run = await h.plan(database=DATABASE)
        findings = {f["name"]: f for f in run["preflight"]}
        assert findings["same_version"]["status"] == "pass" and findings["supported_path"]["status"] == "pass"
        assert findings["supported_path"]["evidence"]["from"] == "7.2"
        assert run["blocking"] == [], run["preflight"]
        await h.command(run["id"], "start")
        # After the upgrade the run ends, or (issue 12) waits for the operator's acceptance.
        done = await h.wait(run["id"], "succeeded", "awaiting_acceptance", "failed", "restored", timeout=120)
        assert done["status"] in ("succeeded", "awaiting_acceptance"), done["message"]
        for name, agent in h.agents.items():
            assert (await agent.client.get("/v1/status")).json()["version"] == "2017 R1", name
