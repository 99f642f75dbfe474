"""``crmcluster tokens create|list|revoke`` against a fake controller: the token printed once
(``--json``: ``{"token": …}``), never listed, revoked by name."""

from __future__ import annotations

import json

from tests.cli.fake_controller import FakeController, error, invoke

NEW = "ct_" + "Q" * 43
RECORD = {
    "name": "prometheus",
    "role": "viewer",
    "created_at": "2026-12-01T10:00:00Z",
    "created_by": "admin",
    "last_used_at": None,
}


def test_create_prints_the_token_once_and_json_holds_it() -> None:
    fake = FakeController({("POST", "/api/v1/tokens"): RECORD | {"token": NEW}})
    result = invoke(fake, "tokens", "create", "--role", "viewer", "--name", "prometheus")
    assert result.exit_code == 0, result.stderr
    assert NEW in result.stdout and "shown once" in result.stdout
    assert fake.bodies("POST", "/api/v1/tokens") == [{"name": "prometheus", "role": "viewer"}]
    result = invoke(fake, "tokens", "create", "--role", "viewer", "--name", "prometheus", "--json")
    assert json.loads(result.stdout)["token"] == NEW


def test_create_refuses_an_unknown_role_before_calling() -> None:
    fake = FakeController()
    result = invoke(fake, "tokens", "create", "--role", "root", "--name", "x")
    assert result.exit_code == 2 and "viewer, operator, admin" in result.stderr
    assert fake.requests == []


def test_list_shows_names_and_roles_and_revoke_names_one() -> None:
    fake = FakeController(
        {
            ("GET", "/api/v1/tokens"): {"tokens": [RECORD]},
            ("DELETE", "/api/v1/tokens/prometheus"): RECORD,
            ("DELETE", "/api/v1/tokens/nope"): error(404, "unknown_token", "no API token named 'nope'"),
        }
    )
    listed = invoke(fake, "tokens", "list")
    assert listed.exit_code == 0 and "prometheus" in listed.stdout and "viewer" in listed.stdout
    assert "never" in listed.stdout
    assert invoke(fake, "tokens", "revoke", "prometheus").exit_code == 0
    missing = invoke(fake, "tokens", "revoke", "nope")
    assert missing.exit_code == 1 and "no API token named 'nope'" in missing.stderr


def test_nodes_add_sends_the_agents_certificate_fingerprint() -> None:
    fp = ":".join(["AB"] * 32)
    fake = FakeController({("POST", "/api/v1/nodes"): {"name": "crm4", "state": "up", "agent_token": "nt_x"}})
    result = invoke(
        fake, "nodes", "add", "crm4", "--agent-url", "https://crm4.example.com:8701", "--tls-fingerprint", fp
    )
    assert result.exit_code == 0, result.stderr
    assert fake.bodies("POST", "/api/v1/nodes")[0]["tls_fingerprint"] == fp
