"""Monitoring and logs, checked with the tools a site uses: ``promtool check metrics`` on what the
three services serve after a real (sandbox) upgrade, ``promtool check config`` / ``check rules``
/ ``test rules`` on deploy/prometheus, the Grafana dashboard's queries checked against the metrics
that exist, and one grep following a step from the controller's log lines to the agent's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from crmcluster.state_backup import PROM_FILE, backup_state
from tests.deploy.observed import REQUEST_ID, Observed, observe
from tests.deploy.tools import DEPLOY, run, tool

pytestmark = pytest.mark.slow

PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "crmcluster-dashboard.json"
METRIC = re.compile(r"\b(crmcluster_[a-z0-9_]+|up)\b(?!\s*\()")
#: Prometheus' own series (not served by crmcluster) that queries may use.
BUILTIN = {"up"}


def sample_names(text: str) -> set[str]:
    """The series names of an exposition (``# TYPE`` families and sample lines)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def queried(expr: str) -> set[str]:
    return set(METRIC.findall(expr)) - {"by", "on"}


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"])
        for p in dash["panels"]
        if p.get("type") != "row"
        for t in p.get("targets", [])
    ]


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def promql_file(exprs: list[tuple[str, str]], tmp_path: Path) -> Path:
    """Each expression as a recording rule, so ``promtool check rules`` parses its PromQL."""
    rules = [
        {"record": f"crmcluster_check:q{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, (_, e) in enumerate(exprs)
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    return path


# --- the files alone ------------------------------------------------------------------------------


def test_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    promtool = tool("promtool", "prometheus")
    text = (PROMETHEUS / "prometheus.yml").read_text()
    token = tmp_path / "crmcluster-viewer.token"
    token.write_text("viewer-token-0123456789abcdef\n")
    shipped = "/etc/prometheus/crmcluster-viewer.token"
    assert text.count(f"credentials_file: {shipped}") == 3  # controller, balancers, agents
    (tmp_path / "prometheus.yml").write_text(text.replace(shipped, str(token)))
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text())
    result = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "rule files found" in result.stdout


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    promtool = tool("promtool", "prometheus")
    checked = run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run([promtool, "test", "rules", str(PROMETHEUS / "alerts.test.yml")], cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {a for a, _ in alert_exprs()}
    for wanted in (
        "CrmclusterServerDown",
        "CrmclusterUpgradePaused",
        "CrmclusterUpgradeAwaitingFix",
        "CrmclusterBalancerStale",
        "CrmclusterStateBackupTooOld",
    ):
        assert wanted in names
    unit_tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text()))
    assert names <= unit_tested, f"alerts without a unit test: {sorted(names - unit_tested)}"


def test_dashboard_is_well_formed(tmp_path: Path) -> None:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "crmcluster" and dash["title"]
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource"]
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for other_title, (x, y, w, h) in boxes:
            overlap = g["x"] < x + w and x < g["x"] + g["w"] and g["y"] < y + h and y < g["y"] + g["h"]
            assert not overlap, f"{p['title']!r} overlaps {other_title!r}"
        boxes.append((p["title"], (g["x"], g["y"], g["w"], g["h"])))
        if p["type"] != "row":
            assert p["description"] and p["targets"], p["title"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    titles = " ".join(p["title"] for p in panels).lower()
    for subject in ("logons", "upgrade", "health", "database"):
        assert subject in titles
    promtool = tool("promtool", "prometheus")
    parsed = run([promtool, "check", "rules", str(promql_file(dashboard_exprs(), tmp_path))])
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr


# --- a site at work ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Observed:
    """One upgrade for the whole module (it takes ~15 s), in an event loop of its own."""
    import asyncio
    import uuid

    from cryptography.fernet import Fernet

    tokens = {"admin": "admin-" + uuid.uuid4().hex, "agent": "agent-" + uuid.uuid4().hex}
    found = asyncio.run(observe(tmp_path_factory.mktemp("site"), tokens, Fernet.generate_key().decode()))
    found.tokens |= tokens  # the admin and agent tokens, beside each node's own
    return found


def backup_metrics(tmp_path: Path) -> str:
    """What crmcluster-state-backup.service leaves for node_exporter."""
    import sqlite3

    db = tmp_path / "state-for-backup.db"
    sqlite3.connect(db).close()
    backup_state(f"sqlite+aiosqlite:///{db}", to=tmp_path / "b", textfile_dir=tmp_path / "t")
    return (tmp_path / "t" / PROM_FILE).read_text()


def test_every_service_serves_metrics_promtool_accepts(observed: Observed) -> None:
    promtool = tool("promtool", "prometheus")
    assert set(observed.metrics) == {"controller", "balancer", "agent crm1", "agent crm2", "agent crm3"}
    for service, text in observed.metrics.items():
        result = run([promtool, "check", "metrics"], stdin=text)
        assert result.returncode == 0, f"{service}:\n{result.stdout}{result.stderr}"
    controller = observed.metrics["controller"]
    run_id = observed.run["id"]
    assert 'crmcluster_upgrade_runs{status="succeeded"} 1.0' in controller
    assert 'crmcluster_upgrade_runs{status="awaiting_fix"} 0.0' in controller
    assert f'crmcluster_upgrade_run_info{{run="{run_id}",status="succeeded"' in controller
    assert (
        'crmcluster_upgrade_step_duration_seconds_count{action="run_installer",status="succeeded"} 3.0'
        in controller
    )
    assert 'crmcluster_controller_node_state{node="crm2",state="up"} 1.0' in controller
    assert 'crmcluster_controller_database_up{db="crm"} 1.0' in controller
    assert re.search(r'crmcluster_controller_heartbeat_age_seconds\{node="crm1"\} [\d.]+', controller)
    balancer = observed.metrics["balancer"]
    assert re.search(
        r'crmcluster_balancer_logons_routed_total\{reason="sticky",server="crm2"\} 1\.0', balancer
    )
    assert re.search(r'crmcluster_balancer_health_checks_total\{result="up",server="crm1"\} [1-9]', balancer)
    agent = observed.metrics["agent crm1"]
    assert 'crmcluster_agent_operations_total{action="run_installer",state="succeeded"} 1.0' in agent
    # Before the upgrade and after it (the guide's post-upgrade backups).
    assert 'crmcluster_agent_operation_duration_seconds_count{action="backup_database"} 2.0' in agent


def test_dashboard_and_alerts_query_only_metrics_that_exist(observed: Observed, tmp_path: Path) -> None:
    served = set().union(*(sample_names(t) for t in observed.metrics.values()))
    served |= sample_names(backup_metrics(tmp_path)) | BUILTIN
    for kind, exprs in (("dashboard panel", dashboard_exprs()), ("alert", alert_exprs())):
        for title, expr in exprs:
            missing = queried(expr) - served
            assert not missing, f"{kind} {title!r} queries {sorted(missing)}, which no service serves"


def test_one_grep_follows_a_step_from_the_controller_to_the_agent(observed: Observed) -> None:
    run_id = observed.run["id"]
    installer = next(
        s for s in observed.run["plan"] if s["action"] == "run_installer" and s["node"] == "crm1"
    )
    op_id = installer["op_id"]
    lines = [ln for ln in observed.lines if op_id in json.dumps(ln)]
    by_side = {
        "controller": [ln for ln in lines if ln["logger"].startswith("crmcluster.upgrade")],
        "agent": [ln for ln in lines if ln["logger"] == "crmcluster.agent.operations"],
    }
    assert by_side["controller"][0]["event"].endswith("(run_installer on crm1, database_server) started")
    assert any("succeeded" in ln["event"] for ln in by_side["controller"])
    assert any("started" in ln["event"] for ln in by_side["agent"])
    assert any("succeeded in" in ln["event"] for ln in by_side["agent"])
    for ln in lines:
        assert ln["op_id"] == op_id and ln["run_id"] == run_id, ln  # fields, not only text
        assert ln["level"] in ("info", "warning") and ln["timestamp"].endswith("Z")
    # A request's id reaches the agent's lines for the operations it started.
    started = [ln for ln in observed.lines if ln.get("request_id") == REQUEST_ID]
    assert {ln["op_id"].rsplit(":", 1)[-1] for ln in started} == {"crm1", "crm2", "crm3"}
    assert all(ln["logger"] == "crmcluster.agent.operations" for ln in started)


def test_no_secret_in_any_log_line(observed: Observed) -> None:
    from tests.upgrade.conftest import DB_PASSWORD, LICENSE

    text = "\n".join(json.dumps(ln) for ln in observed.lines)
    assert len(observed.tokens) == 6  # admin, agent, each node's own and Prometheus' viewer token
    for secret in (DB_PASSWORD, LICENSE, *observed.tokens.values()):
        assert secret not in text
