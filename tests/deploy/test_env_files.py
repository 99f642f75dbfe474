"""deploy/env: one example settings file per service, in which every setting of the service appears
with a comment, every value is one the service accepts, and every commented value is the default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import BaseModel

from config.errors import SettingError
from config.settings import AgentSettings, BalancerSettings, CommonSettings, ControllerSettings, load_settings
from tests.deploy.tools import DEPLOY

SERVICES: dict[str, type[CommonSettings]] = {
    "controller.env": ControllerSettings,
    "balancer.env": BalancerSettings,
    "agent.env": AgentSettings,
}
SETTING = re.compile(r"^(#?)(CRMCLUSTER_[A-Z0-9_]+)=(.*)$")
#: What a site fills in before the service starts (the file ships them empty).
REQUIRED_VALUES = {
    "CRMCLUSTER_ADMIN_TOKEN": "adm-0123456789abcdef0123",
    "CRMCLUSTER_AGENT_TOKEN": "agt-0123456789abcdef0123",
    "CRMCLUSTER_SECRET_KEY": Fernet.generate_key().decode(),
    "CRMCLUSTER_NAME": "crm2",
}


@dataclass
class Line:
    number: int
    commented: bool
    name: str
    value: str


def setting_lines(path: Path) -> list[Line]:
    out = []
    for n, text in enumerate(path.read_text().splitlines()):
        m = SETTING.match(text)
        if m:
            out.append(Line(n, m.group(1) == "#", m.group(2), m.group(3)))
    return out


def env_names(cls: type[BaseModel], prefix: str = "CRMCLUSTER_") -> dict[str, tuple[str, ...]]:
    """``CRMCLUSTER_<FIELD>`` (nested models: ``<FIELD>__<SUB>``) → the attribute path."""
    names: dict[str, tuple[str, ...]] = {}
    for field, info in cls.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for sub, path in env_names(ann, f"{prefix}{field.upper()}__").items():
                names[sub] = (field, *path)
        else:
            names[prefix + field.upper()] = (field,)
    return names


def value_at(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        obj = getattr(obj, part)
    return obj


def load(cls: type[CommonSettings], path: Path, tmp_path: Path, *, uncomment: int | None = None) -> Any:
    """Load ``cls`` from a copy of the file with the required secrets filled in (and one commented
    line made active)."""
    lines = path.read_text().splitlines()
    for i, text in enumerate(lines):
        m = SETTING.match(text)
        if m and not m.group(1) and m.group(3) == "" and m.group(2) in REQUIRED_VALUES:
            lines[i] = f"{m.group(2)}={REQUIRED_VALUES[m.group(2)]}"
    if uncomment is not None:
        lines[uncomment] = lines[uncomment][1:]
    copy = tmp_path / path.name
    copy.write_text("\n".join(lines) + "\n")
    return load_settings(cls, _env_file=copy)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CRMCLUSTER_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("file", SERVICES)
def test_every_setting_of_the_service_appears_once(file: str) -> None:
    lines = setting_lines(DEPLOY / "env" / file)
    known = env_names(SERVICES[file])
    named = [line.name for line in lines]
    unknown = sorted(set(named) - set(known))
    missing = sorted(set(known) - set(named))
    assert not unknown, f"deploy/env/{file} names settings the service does not have: {unknown}"
    assert not missing, f"add these settings (with a comment) to deploy/env/{file}: {missing}"
    twice = sorted({n for n in named if named.count(n) > 1})
    assert not twice, f"deploy/env/{file} names these more than once: {twice}"


@pytest.mark.parametrize("file", SERVICES)
def test_every_setting_has_a_comment(file: str) -> None:
    text = (DEPLOY / "env" / file).read_text().splitlines()
    for line in setting_lines(DEPLOY / "env" / file):
        i = line.number - 1
        while i >= 0 and SETTING.match(text[i]):
            i -= 1  # a group of related settings shares the comment above it
        assert i >= 0 and text[i].startswith("# "), f"deploy/env/{file}:{line.number + 1}: no comment"


@pytest.mark.parametrize("file", SERVICES)
def test_the_file_as_filled_in_starts_the_service(file: str, tmp_path: Path) -> None:
    settings = load(SERVICES[file], DEPLOY / "env" / file, tmp_path)
    assert isinstance(settings, SERVICES[file])


@pytest.mark.parametrize("file", ["controller.env", "agent.env"])
def test_the_file_ships_no_secret(file: str, tmp_path: Path) -> None:
    """Unfilled, the service refuses to start, naming a secret to set."""
    with pytest.raises(SettingError, match=r"CRMCLUSTER_(ADMIN_TOKEN|AGENT_TOKEN|SECRET_KEY|NAME)"):
        load_settings(SERVICES[file], _env_file=DEPLOY / "env" / file)


@pytest.mark.parametrize("file", SERVICES)
def test_commented_values_are_accepted_and_are_the_defaults(file: str, tmp_path: Path) -> None:
    """Uncommenting any one line keeps the service starting; where the setting has a default, the
    commented value is that default (so the file never lies about what happens when unset)."""
    cls = SERVICES[file]
    path = DEPLOY / "env" / file
    names = env_names(cls)
    base = load(cls, path, tmp_path)
    for line in setting_lines(path):
        if not line.commented or line.value == "":
            continue
        try:
            changed = load(cls, path, tmp_path, uncomment=line.number)
        except SettingError as exc:
            raise AssertionError(f"deploy/env/{file}:{line.number + 1}: {exc}") from None
        default = value_at(base, names[line.name])
        if default not in (None, "", {}, []):
            got = value_at(changed, names[line.name])
            assert got == default, (
                f"deploy/env/{file}:{line.number + 1}: {got!r} is not the default {default!r}"
            )
