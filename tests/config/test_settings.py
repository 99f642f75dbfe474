"""Settings: a missing or malformed one stops start-up with one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from config.errors import SettingError
from config.settings import AgentSettings, BalancerSettings, CommonSettings, ControllerSettings, load_settings

GOOD = {"admin_token": "a" * 20 + "x", "agent_token": "b" * 20 + "y"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CRMCLUSTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_the_embedded_database() -> None:
    s = load_settings(CommonSettings)
    assert s.crm_url.startswith("sqlite+aiosqlite:///")
    assert s.crm_url.endswith("crmcluster-data/crm.db")
    # crmcluster's own state lives apart: restoring the CRM database must not roll it back.
    assert s.state_url.endswith("crmcluster-data/state.db")
    assert s.install_name == "CRM" and s.url_path_install == "crm"
    assert s.sysparam_row_names()["server_names"] == "ServerNames"


def test_controller_requires_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingError) as err:
        load_settings(ControllerSettings)
    assert str(err.value) == "CRMCLUSTER_ADMIN_TOKEN: required, not set"


def test_controller_requires_secret_key() -> None:
    with pytest.raises(SettingError) as err:
        load_settings(ControllerSettings, **GOOD)
    assert str(err.value).startswith("CRMCLUSTER_SECRET_KEY")


def test_env_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    (tmp_path / ".env").write_text(
        f"CRMCLUSTER_ADMIN_TOKEN={GOOD['admin_token']}\nCRMCLUSTER_SECRET_KEY={key}\n"
    )
    monkeypatch.setenv("CRMCLUSTER_AGENT_TOKEN", GOOD["agent_token"])
    monkeypatch.setenv("CRMCLUSTER_CRM_NAMES__ACTIVITY_TABLE", "ActivityLog")
    monkeypatch.setenv("CRMCLUSTER_SYSPARAM_SERVER_NAMES", "CRMServers")
    s = load_settings(ControllerSettings)
    assert s.admin_token.get_secret_value() == GOOD["admin_token"]
    assert s.crm_names.activity_table == "ActivityLog"
    assert s.sysparam_row_names()["server_names"] == "CRMServers"
    assert GOOD["admin_token"] not in repr(s)  # secrets are secret types


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CRMCLUSTER_AGENT_TOKEN": "changeme"}, "CRMCLUSTER_AGENT_TOKEN: token must be a real secret"),
        ({"CRMCLUSTER_AGENT_TOKEN": "short"}, "CRMCLUSTER_AGENT_TOKEN: token must be a real secret"),
        (
            {"CRMCLUSTER_AGENT_TOKEN": GOOD["agent_token"], "CRMCLUSTER_INSTALL_NAME": "CRM/../x"},
            "CRMCLUSTER_INSTALL_NAME",
        ),
        (
            {"CRMCLUSTER_AGENT_TOKEN": GOOD["agent_token"], "CRMCLUSTER_CRM_TIMEZONE": "Mars/Olympus"},
            "unknown time zone",
        ),
        ({"CRMCLUSTER_AGENT_TOKEN": GOOD["agent_token"], "CRMCLUSTER_SECRET_KEY": "not-a-key"}, "Fernet key"),
        ({"CRMCLUSTER_AGENT_TOKEN": GOOD["agent_token"], "CRMCLUSTER_DRIVER": "linux"}, "CRMCLUSTER_DRIVER"),
        (
            {"CRMCLUSTER_AGENT_TOKEN": GOOD["agent_token"], "CRMCLUSTER_HEARTBEAT_INTERVAL": "-1"},
            "CRMCLUSTER_HEARTBEAT_INTERVAL",
        ),
        (
            {
                "CRMCLUSTER_AGENT_TOKEN": GOOD["agent_token"],
                "CRMCLUSTER_CRM_NAMES__ACTIVITY_TABLE": "x; DROP TABLE y",
            },
            "CRMCLUSTER_CRM_NAMES__ACTIVITY_TABLE",
        ),
    ],
)
def test_malformed_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingError) as err:
        load_settings(AgentSettings)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    for v in env.values():
        if "token" in expected.lower():
            assert v not in message or len(v) < 8


def test_balancer_admin_token_is_optional() -> None:
    s = load_settings(BalancerSettings)
    assert s.admin_token is None and s.scheme == "http"


def test_command_line_stops_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "crmcluster", "controller", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "crmcluster: CRMCLUSTER_ADMIN_TOKEN: required, not set"
    assert "Traceback" not in proc.stderr


def test_help_works() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "crmcluster", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for cmd in ("controller", "balancer", "agent", "migrate"):
        assert cmd in proc.stdout
