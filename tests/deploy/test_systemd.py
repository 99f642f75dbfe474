"""deploy/systemd: the units pass ``systemd-analyze verify`` and score as hardened by
``systemd-analyze security --offline``; the sysusers.d file creates the service user."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.deploy.tools import DEPLOY, run, tool

UNITS = sorted([*(DEPLOY / "systemd").glob("*.service"), *(DEPLOY / "systemd").glob("*.timer")])
SERVICES = [u for u in UNITS if u.suffix == ".service"]
DAEMONS = [u for u in SERVICES if u.name in ("crmcluster-controller.service", "crmcluster-balancer.service")]
INSTALLED = "/opt/crmcluster/bin/crmcluster"


def test_there_are_units_for_the_services_and_the_state_backup() -> None:
    assert {u.name for u in UNITS} == {
        "crmcluster-controller.service",
        "crmcluster-balancer.service",
        "crmcluster-state-backup.service",
        "crmcluster-state-backup.timer",
    }


def local_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's ``crmcluster`` (verify checks that the
    program exists; on a server it is the venv under /opt/crmcluster)."""
    text = unit.read_text()
    assert INSTALLED in text or unit.suffix != ".service"
    crmcluster = Path(sys.executable).with_name("crmcluster")
    assert crmcluster.exists(), crmcluster
    copy = tmp_path / unit.name
    copy.write_text(text.replace(INSTALLED, str(crmcluster)))
    return copy


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    result = run([analyze, "verify", str(local_copy(unit, tmp_path))])
    assert result.returncode == 0, result.stdout + result.stderr
    assert unit.name not in result.stderr, result.stderr  # no warning about our unit either


@pytest.mark.parametrize("unit", SERVICES, ids=lambda u: u.name)
def test_units_are_hardened(unit: Path, tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    result = run([analyze, "security", "--offline=yes", "--threshold=20", str(local_copy(unit, tmp_path))])
    # --threshold is in tenths: 20 is an exposure level of 2.0 ("OK" is below 4).
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
    assert level is not None, result.stdout + result.stderr
    assert result.returncode == 0 and float(level.group(1)) <= 2.0, result.stdout


@pytest.mark.parametrize("unit", DAEMONS, ids=lambda u: u.name)
def test_units_run_as_the_dedicated_user_with_the_data_folder_writable(unit: Path) -> None:
    settings = dict(
        line.split("=", 1)
        for line in unit.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["User"] == settings["Group"] == "crmcluster"
    assert settings["EnvironmentFile"].startswith("/etc/crmcluster/")
    assert settings["Restart"] == "on-failure"
    assert settings["ProtectSystem"] == "strict"
    assert settings["NoNewPrivileges"] == settings["PrivateTmp"] == "yes"
    assert settings["ReadWritePaths"] == "/var/lib/crmcluster"
    assert settings["Environment"] == "CRMCLUSTER_DATA_DIR=/var/lib/crmcluster"
    # A setting error exits 2: systemd must not restart in a loop on it.
    assert settings["RestartPreventExitStatus"] == "2"
    env_file = DEPLOY / "env" / Path(settings["EnvironmentFile"]).name
    assert env_file.exists(), f"{unit.name} reads {settings['EnvironmentFile']}, deploy/env has no example"


def test_the_backup_runs_as_the_service_user_daily() -> None:
    service = (DEPLOY / "systemd" / "crmcluster-state-backup.service").read_text()
    assert "User=crmcluster" in service and "Type=oneshot" in service
    assert f"ExecStart={INSTALLED} backup-state --to /var/backups/crmcluster" in service
    timer = (DEPLOY / "systemd" / "crmcluster-state-backup.timer").read_text()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer


def test_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    sysusers = tool("systemd-sysusers", "systemd")
    (tmp_path / "etc").mkdir()
    conf = (DEPLOY / "systemd" / "crmcluster.sysusers.conf").read_text()
    result = run([sysusers, f"--root={tmp_path}", "-"], stdin=conf, timeout=30)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    user = next(line for line in passwd.splitlines() if line.startswith("crmcluster:"))
    fields = user.split(":")
    assert fields[5] == "/var/lib/crmcluster"
    assert fields[6].endswith("nologin")
    assert int(fields[2]) < 1000  # a system user
