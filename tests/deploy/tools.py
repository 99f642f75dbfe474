"""The peer tools the deploy/ tests run (Debian packages listed in ``scripts/test``), and where
the files under test live."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def tool(name: str, package: str) -> str:
    """The path of ``name``, or skip the test naming the Debian package that provides it."""
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )
    if path is None:
        pytest.skip(f"{name} not installed (Debian package {package}; scripts/test installs it as root)")
    return path


def run(
    argv: list[str], *, timeout: float = 60, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion within ``timeout`` seconds; output captured as text."""
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )
