"""deploy/haproxy: both configurations pass a real ``haproxy -c`` without a warning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.tools import DEPLOY, run, tool

CONFIGS = sorted((DEPLOY / "haproxy").glob("*.cfg"))


def test_both_site_layouts_have_a_configuration() -> None:
    assert {c.name for c in CONFIGS} == {"balancers.cfg", "agent-check.cfg"}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_haproxy_accepts_the_configuration(cfg: Path) -> None:
    haproxy = tool("haproxy", "haproxy")
    result = run([haproxy, "-c", "-f", str(cfg)], timeout=30)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Configuration file is valid" in out
    assert "[WARNING]" not in out and "[ALERT]" not in out, out


def servers(cfg: Path) -> list[str]:
    return re.findall(r"^\s*server\s+(\S+)\s", cfg.read_text(), flags=re.M)


def test_balancer_replicas_are_checked_on_healthz() -> None:
    text = (DEPLOY / "haproxy" / "balancers.cfg").read_text()
    assert len(servers(DEPLOY / "haproxy" / "balancers.cfg")) >= 2
    assert "http-check send meth GET uri /healthz" in text
    assert "http-check expect status 200" in text


def test_web_servers_are_asked_through_the_agent_check() -> None:
    text = (DEPLOY / "haproxy" / "agent-check.cfg").read_text()
    assert servers(DEPLOY / "haproxy" / "agent-check.cfg") == ["crm1", "crm2", "crm3"]
    assert re.search(r"default-server .*agent-check agent-port 8702", text)
    # Percentages the agent answers scale the configured weight: 1 would round 50% down to 0.
    assert re.search(r"default-server .*weight 100", text)
