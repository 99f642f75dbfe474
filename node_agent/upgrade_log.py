"""The installer's ``Setup/upgradelog.html`` (the guide's "Reviewing the upgrade log"): writing
one (the sandbox's installer) and reading one (both drivers' ``read_upgrade_log``).

The shape, as the guide describes it: an *Upgrade Summary* panel listing each script run and
whether it succeeded; *CRM script logs* and *SQL script logs* linking each script's own log; an
html file marked with an asterisk (``*``) for a script that hit errors; and lines saying
**NB must be fixed** for what an administrator must correct by hand. The reader is lenient (real
logs vary): any summary row naming a script with a success/failure word counts, every line holding
"NB must be fixed" is reported, and so is every asterisk-marked file.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

#: The guide's upgrade scripts, in the order the install wizard runs them.
UPGRADE_SCRIPTS: tuple[str, ...] = (
    "CustomPages.es",
    "Custom_Captions.es",
    "updatehelplink.es",
    "update_metadata.es",
    "addConstraints.es",
    "views.es",
    "user_views.es",
    "Tables.es",
    "Update_indexes_mssql.sql",
)
MUST_FIX = "NB must be fixed"

_TAG = re.compile(r"<[^>]+>")
_SCRIPT = re.compile(r"([A-Za-z0-9_]+\.(?:es|sql))", re.I)
_ROW = re.compile(r"<tr[^>]*>(.*?)</tr>", re.I | re.S)
_STAR_LINK = re.compile(r"""href\s*=\s*["']?([^"'>\s]*\*[^"'>\s]*)""", re.I)
_FAIL_WORDS = re.compile(r"\b(fail(ed|ure)?|error(s)?|not\s+successful)\b", re.I)
_OK_WORDS = re.compile(r"\b(success(ful)?|succeeded|ok|completed)\b", re.I)


@dataclass
class ScriptOutcome:
    name: str
    success: bool
    message: str = ""


@dataclass
class UpgradeLog:
    from_version: str | None = None
    to_version: str | None = None
    scripts: list[ScriptOutcome] = field(default_factory=list)
    must_fix: list[str] = field(default_factory=list)
    error_files: list[str] = field(default_factory=list)
    completed: bool = True

    @property
    def ok(self) -> bool:
        return (
            self.completed
            and bool(self.scripts)
            and all(s.success for s in self.scripts)
            and not self.must_fix
            and not self.error_files
        )

    def as_result(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "completed": self.completed,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "scripts": [{"name": s.name, "success": s.success, "message": s.message} for s in self.scripts],
            "failed_scripts": [s.name for s in self.scripts if not s.success],
            "must_fix": list(self.must_fix),
            "error_files": list(self.error_files),
        }


def _text(fragment: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", fragment)).split())


def parse_upgrade_log(document: str) -> UpgradeLog:
    """Read an ``upgradelog.html``: each script's outcome, every "NB must be fixed" line."""
    log = UpgradeLog()
    m = re.search(
        r"from\s+(?:version\s+)?([0-9][0-9. ]*[0-9](?:\s*R\d)?)\s+to\s+([0-9][0-9. ]*(?:R\d)?)",
        _text(document),
        re.I,
    )
    if m:
        log.from_version, log.to_version = m.group(1).strip(), m.group(2).strip()
    seen: set[str] = set()
    for row in _ROW.findall(document):
        text = _text(row)
        sm = _SCRIPT.search(text)
        if not sm or sm.group(1).lower() in seen:
            continue
        rest = text[sm.end() :]
        if _FAIL_WORDS.search(rest):
            success = False
        elif _OK_WORDS.search(rest):
            success = True
        else:
            continue
        seen.add(sm.group(1).lower())
        log.scripts.append(ScriptOutcome(sm.group(1), success, rest.strip()[:300]))
    for line in re.split(r"<br\s*/?>|</p>|</li>|</tr>|</div>|\n", document, flags=re.I):
        text = _text(line)
        if MUST_FIX.lower() in text.lower() and text not in log.must_fix:
            log.must_fix.append(text[:500])
    for link in _STAR_LINK.findall(document):
        name = html.unescape(link)
        if name not in log.error_files:
            log.error_files.append(name)
    if re.search(r"upgrade\s+(did\s+not\s+complete|aborted|incomplete)", _text(document), re.I):
        log.completed = False
    return log


_LINK = re.compile(r"""href\s*=\s*["']?([^"'>\s]+\.(?:html?|log|txt))""", re.I)
#: How much of one script's log a result carries.
SCRIPT_LOG_CHARS = 4000


def linked_logs(document: str) -> list[str]:
    """The per-script logs the upgrade log links (CRM script logs, SQL script logs, ``*`` files):
    relative file names only, never a URL or a path out of the Setup folder."""
    out: list[str] = []
    for link in _LINK.findall(document):
        name = html.unescape(link)
        if "://" in name or name.startswith(("/", "\\")) or ".." in name or ":" in name:
            continue
        if name not in out:
            out.append(name)
    return out


def render_upgrade_log(
    *,
    install_name: str,
    from_version: str,
    to_version: str,
    outcomes: list[ScriptOutcome],
    must_fix: list[str],
    completed: bool,
    when: str,
) -> str:
    """The ``upgradelog.html`` the sandbox's installer writes, in the shape the guide describes."""
    e = html.escape
    rows = "\n".join(
        f'<tr class="script"><td>{e(o.name)}</td><td class="{"ok" if o.success else "failed"}">'
        f"{'Success' if o.success else 'Failed'}</td><td>{e(o.message)}</td></tr>"
        for o in outcomes
    )
    crm_links = "\n".join(
        f'<li><a href="{e(("*" if not o.success else "") + o.name)}.html">{e(o.name)}</a></li>'
        for o in outcomes
        if o.name.endswith(".es")
    )
    sql_links = "\n".join(
        f'<li><a href="{e(("*" if not o.success else "") + o.name)}.log">{e(o.name)}</a></li>'
        for o in outcomes
        if o.name.endswith(".sql")
    )
    notes = "\n".join(f'<p class="nb">{e(MUST_FIX)}: {e(m)}</p>' for m in must_fix)
    status = "The upgrade completed." if completed else "The upgrade did not complete. Restore the backups."
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sage CRM Upgrade Log - {e(install_name)}</title></head>
<body>
<h1>Sage CRM upgrade log: {e(install_name)}</h1>
<p>Upgrade from version {e(from_version)} to {e(to_version)}, {e(when)}</p>
<div id="summary"><h2>Upgrade Summary</h2>
<table>
<tr><th>Script</th><th>Result</th><th>Details</th></tr>
{rows}
</table>
<p id="status">{e(status)}</p>
</div>
<div id="crm-script-logs"><h2>CRM script logs</h2><ul>
{crm_links}
</ul></div>
<div id="sql-script-logs"><h2>SQL script logs</h2><ul>
{sql_links}
</ul></div>
<div id="messages">
{notes}
</div>
</body></html>
"""
