"""The sandbox's registry: the two keys a Sage CRM install keeps under ``HKLM\\SOFTWARE\\eWare``,
``Config\\/<install>`` and ``Mappings\\/<install>``, stored as JSON and exported/imported as
``.reg`` files in the format ``reg.exe export`` writes (the guide's "Backing up the registry
manually" and "Restoring the registry backup"). No password is ever a value here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from node_agent.drivers.base import ActionFailed
from node_agent.journal import atomic_write_text

HIVE = "HKEY_LOCAL_MACHINE\\SOFTWARE\\eWare"
REG_HEADER = "Windows Registry Editor Version 5.00"
_KEY_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]$")
_VALUE_LINE = re.compile(r'^"(?P<name>(?:[^"\\]|\\.)*)"="(?P<value>(?:[^"\\]|\\.)*)"$')


def config_key(install: str) -> str:
    return f"{HIVE}\\Config\\/{install}"


def mappings_key(install: str) -> str:
    return f"{HIVE}\\Mappings\\/{install}"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _unesc(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


class SandboxRegistry:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        data: dict[str, dict[str, str]] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    def save(self, keys: dict[str, dict[str, str]]) -> None:
        atomic_write_text(self.path, json.dumps(keys, indent=1, sort_keys=True))

    def get(self, key: str) -> dict[str, str]:
        return dict(self.load().get(key, {}))

    def set_values(self, key: str, values: dict[str, str]) -> None:
        keys = self.load()
        keys.setdefault(key, {}).update(values)
        self.save(keys)

    def delete(self, key: str) -> bool:
        """``reg delete KEY /f``: the key and its values; False when there was no such key."""
        keys = self.load()
        if key not in keys:
            return False
        del keys[key]
        self.save(keys)
        return True

    def export(self, key: str) -> str:
        """``reg export KEY file`` for one key (and nothing else)."""
        values = self.load().get(key)
        if values is None:
            raise ActionFailed(f"ERROR: The system was unable to find the specified registry key: {key}")
        lines = [REG_HEADER, "", f"[{key}]"]
        lines += [f'"{_esc(n)}"="{_esc(v)}"' for n, v in sorted(values.items())]
        return "\r\n".join(lines) + "\r\n"

    def import_reg(self, text: str) -> list[str]:
        """``reg import file``: every key in the file replaces the stored key; returns the keys."""
        lines = [ln.strip() for ln in text.lstrip("\ufeff").splitlines()]
        if not lines or lines[0] != REG_HEADER:
            raise ActionFailed("ERROR: The specified file is not a registry file")
        parsed: dict[str, dict[str, str]] = {}
        current: str | None = None
        for line in lines[1:]:
            if not line:
                continue
            km = _KEY_LINE.match(line)
            if km:
                current = km.group("key")
                if not current.startswith(HIVE + "\\"):
                    raise ActionFailed(f"ERROR: refusing to import a key outside {HIVE}: {current}")
                parsed[current] = {}
                continue
            vm = _VALUE_LINE.match(line)
            if vm is None or current is None:
                raise ActionFailed(f"ERROR: The registry file holds a line reg.exe cannot read: {line[:80]}")
            parsed[current][_unesc(vm.group("name"))] = _unesc(vm.group("value"))
        keys = self.load()
        keys.update(parsed)
        self.save(keys)
        return list(parsed)
