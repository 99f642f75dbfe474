"""The agent's Windows service and ``deploy/windows/install-agent.ps1``, tested as data (pywin32
and PowerShell exist only on Windows): what the service is, what the script runs."""

from __future__ import annotations

import re
from pathlib import Path

from crmcluster.windows_service import SERVICE_NAME, definition, log_handlers

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "windows" / "install-agent.ps1"


def test_the_service_starts_by_itself_restarts_on_failure_and_runs_as_given() -> None:
    d = definition(account=r".\svc-crmcluster")
    assert d.name == SERVICE_NAME and d.start == "delayed-auto" and d.account == r".\svc-crmcluster"
    assert d.failure_commands() == [
        [
            "sc.exe",
            "failure",
            SERVICE_NAME,
            "reset=",
            "86400",
            "actions=",
            "restart/5000/restart/5000/restart/60000",
        ],
        ["sc.exe", "failureflag", SERVICE_NAME, "1"],
    ]
    assert str(d.log_dir).endswith(r"crmcluster\logs") and "W3SVC" in d.depends_on
    assert definition(account=None).account is None  # LocalSystem


def test_logs_rotate_under_program_data(tmp_path: Path, monkeypatch: object) -> None:
    import logging.handlers
    from dataclasses import replace
    from pathlib import PureWindowsPath

    d = replace(definition(account=None), working_dir=PureWindowsPath(str(tmp_path)))
    handlers = log_handlers(d)
    rotating = [h for h in handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
    assert rotating and rotating[0].maxBytes == 10 * 1024 * 1024 and rotating[0].backupCount == 5
    assert Path(rotating[0].baseFilename) == tmp_path / "logs" / "agent.log"
    for h in handlers:
        h.close()


def test_the_install_script_opens_the_firewall_for_the_controller_only() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    rule = re.search(r"New-NetFirewallRule (.+?)\| Out-Null", text, re.S)
    assert rule is not None
    args = rule.group(1)
    assert "-Direction Inbound" in args and "-Action Allow" in args and "-LocalPort $Port" in args
    assert "-RemoteAddress $ControllerAddress.ToString()" in args and "Any" not in args
    assert "[System.Net.IPAddress] $ControllerAddress" in text  # an address, not a name or 'Any'


def test_the_install_script_makes_the_venv_writes_settings_and_installs_the_service() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    steps = [
        "'-m', 'venv', $Venv",
        '"$Package[windows]"',
        "CRMCLUSTER_DRIVER=windows",
        "CRMCLUSTER_CONTROLLER_URL=$ControllerUrl",
        "Set-Content -Path $EnvFile",
        "'/inheritance:r'",
        "New-NetFirewallRule",
        "@('agent', 'install-service')",
        "Start-Service -Name 'crmcluster-agent'",
    ]
    positions = [text.index(s) for s in steps]
    assert positions == sorted(positions), "the steps run in this order"
    # The token and the service password are secure strings, never on a command line.
    assert "[securestring] $AgentToken" in text and "[securestring] $ServicePassword" in text
    assert "--password" not in text and "CRMCLUSTER_SERVICE_PASSWORD" in text
    # Every program is called with an argument list, never through cmd /c or Invoke-Expression.
    assert "cmd /c" not in text.lower() and "invoke-expression" not in text.lower()
    assert "$ErrorActionPreference = 'Stop'" in text and "$LASTEXITCODE" in text


def test_install_service_refuses_off_windows() -> None:
    from typer.testing import CliRunner

    from crmcluster.cli import app

    result = CliRunner().invoke(app, ["agent", "install-service"])
    assert result.exit_code == 2 and "runs on Windows" in result.output
