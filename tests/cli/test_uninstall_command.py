"""``crmcluster nodes remove NAME --uninstall`` against a fake controller."""

from __future__ import annotations

import json

import httpx

from tests.cli.fake_controller import FakeController, error, invoke

STEPS = [
    "wait_for_logoffs",
    "remove_from_server_names",
    "remove_crm_services",
    "unregister_dll",
    "delete_iis_application",
    "delete_registry_keys",
    "delete_install_folder",
    "verify_uninstalled",
    "forget_node",
]


def _job(status: str) -> dict[str, object]:
    return {
        "id": "j9",
        "kind": "remove",
        "target": "crm4",
        "status": status,
        "message": None,
        "steps": [{"seq": i, "node": "crm4", "action": a, "status": status} for i, a in enumerate(STEPS, 1)],
    }


def test_remove_uninstall_asks_for_it_and_follows_the_job() -> None:
    fake = FakeController()
    fake.routes[("DELETE", "/api/v1/nodes/crm4")] = httpx.Response(202, json=_job("running"))
    fake.routes[("GET", "/api/v1/jobs/j9")] = _job("succeeded")
    result = invoke(fake, "nodes", "remove", "crm4", "--uninstall", "--drain-timeout", "30")
    assert result.exit_code == 0, result.stderr
    sent = fake.requests[0]
    assert sent.url.params["uninstall"] == "true" and sent.url.params["drain_timeout"] == "30"
    for action in ("remove_crm_services", "delete_registry_keys", "delete_install_folder"):
        assert action in result.stdout

    result = invoke(fake, "nodes", "remove", "crm4", "--uninstall", "--json")
    assert json.loads(result.stdout)["status"] == "succeeded"


def test_a_refused_removal_says_what_to_move_first() -> None:
    fake = FakeController()
    fake.routes[("DELETE", "/api/v1/nodes/crm2")] = error(
        409, "conflict", "crm2 cannot be removed: the Indexer service runs once in the cluster: move it first"
    )
    result = invoke(fake, "nodes", "remove", "crm2", "--uninstall")
    assert result.exit_code == 1
    assert "move it first (HTTP 409 conflict)" in result.stderr
    assert "uninstall" not in str(fake.requests[0].url.path)
