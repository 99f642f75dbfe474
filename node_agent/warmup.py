"""The warm-up logon: after an IIS reset or an app-pool recycle someone must log on to each
server before load balancing works again (the guide's "Configuring multi-server Sage CRM"); the
agent does it itself, as a browser would, and then logs off so no licence seat stays taken:

1. ``GET /<install>/eware.dll/go`` — Sage CRM's logon page; its first form gives the action to post
   to and the hidden fields (the page already carries a provisional ``SID``: it is *not* a logon);
2. ``POST`` the form with ``EWARE_USERID`` and ``PASSWORD`` (an "already logged on" page is
   answered by re-posting its own form, which carries ``LoginAnyway``);
3. logged on only when the answer is no longer a logon form and carries a ``SID``;
4. the page's own Log Out link is followed.

The password is sent in the form and never logged or recorded (``PASSWORD=***``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import httpx

from node_agent.drivers.base import ActionFailed

_SID = re.compile(r"[?&]SID=(\d+)")
_LOG_OUT = re.compile(r"^\s*log\s*(out|off)\s*$", re.I)


class _Page(HTMLParser):
    """The first form (action, inputs) and the links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.names: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (href, title, text)
        self._in_form = False
        self._forms = 0
        self._link: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        if tag == "form":
            self._forms += 1
            if self._forms == 1:
                self._in_form = True
                self.action = a.get("action", "")
        elif tag == "input" and self._in_form and a.get("name"):
            self.names.add(a["name"].upper())
            if a.get("type", "text").lower() not in ("submit", "button"):
                self.fields[a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self._link = [a["href"], a.get("title", ""), ""]

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link[2] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], self._link[1], self._link[2].strip()))
            self._link = None

    @property
    def is_logon_form(self) -> bool:
        return "EWARE_USERID" in self.names

    def log_out_link(self) -> str | None:
        for href, title, text in self.links:
            if _LOG_OUT.match(title) or _LOG_OUT.match(text):
                return href
        return None


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


async def warmup_logon(
    *,
    base_url: str,
    install_name: str,
    user: str,
    password: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 30.0,
    record: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Log on through the server's own logon page, then log off; returns what happened."""
    note = record or (lambda _line: None)
    inst = install_name.lower()
    try:
        async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout) as client:
            start = f"/{inst}/eware.dll/go"
            note(f"http: GET {base_url}{start}")
            page = await client.get(start)
            if page.status_code >= 500:
                raise ActionFailed(f"the logon page answered {page.status_code}: is IIS running?")
            form = _parse(page.text)
            if not form.is_logon_form or form.action is None:
                raise ActionFailed(f"{start} is not Sage CRM's logon page (no EWARE_USERID field)")
            action = urljoin(str(page.url), form.action)
            fields = {**form.fields, "EWARE_USERID": user, "PASSWORD": password or ""}
            note(f"http: POST {action} with EWARE_USERID={user}, PASSWORD=***")
            resp = await client.post(action, data=fields)
            if "already logged on" in resp.text.lower():
                again = _parse(resp.text)
                note(f"http: POST {action} (already logged on: LoginAnyway)")
                resp = await client.post(urljoin(str(resp.url), again.action or action), data=again.fields)
            if resp.status_code >= 400:
                raise ActionFailed(f"the warm-up logon answered {resp.status_code}")
            done = _parse(resp.text)
            sid = _SID.search(resp.text) or _SID.search(str(resp.url))
            if done.is_logon_form or sid is None:
                raise ActionFailed(
                    f"the warm-up logon as {user} was refused: Sage CRM answered its logon page again "
                    "(check CRMCLUSTER_WARMUP_USER and CRMCLUSTER_WARMUP_PASSWORD)"
                )
            link = done.log_out_link()
            if link is None:
                raise ActionFailed(
                    f"logged on as {user} but the page has no Log Out link: the seat stays taken until the "
                    "session times out"
                )
            out = urljoin(str(resp.url), link)
            note(f"http: GET {out}")
            off = await client.get(out)
    except httpx.HTTPError as exc:
        raise ActionFailed(f"the warm-up logon could not reach {base_url}: {type(exc).__name__}") from exc
    return {
        "logged_on": True,
        "logged_off": 1 if off.status_code < 400 else 0,
        "status": resp.status_code,
        "sid": sid.group(1),
        "user": user,
    }
