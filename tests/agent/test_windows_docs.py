"""docs/windows.md stays complete: one row per action of the windows driver, each with the guide's
step, the command or T-SQL, how success is verified, the rights and the documentation followed."""

from __future__ import annotations

import re
from pathlib import Path

from node_agent.protocol import Action

DOC = Path(__file__).resolve().parents[2] / "docs" / "windows.md"


def _rows() -> dict[str, list[str]]:
    """Action name -> the row's cells, for every row of the "One row per action" table."""
    text = DOC.read_text(encoding="utf-8").split("## One row per action", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            rows[name] = cells
    return rows


def test_every_action_has_a_complete_row() -> None:
    rows = _rows()
    # disable/enable_exchange_integration share a row written `disable_exchange_integration` / `enable_…`.
    missing = [a.value for a in Action if a.value not in rows and a != Action.ENABLE_EXCHANGE_INTEGRATION]
    assert missing == []
    for name, cells in rows.items():
        assert len(cells) == 6, (name, cells)
        guide, command, verified, rights, followed = cells[1:]
        assert all((guide, command, verified, rights, followed)), name
