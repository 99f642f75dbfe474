"""The warm-up logon: after an IIS reset or an app-pool recycle someone must log on to each
server before load balancing works again (the guide's "Configuring multi-server Sage CRM"); the
agent does it itself — a logon through the server's own logon page, then a logoff, so it leaves
no session behind. The password (windows) is sent in the form and never logged.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from node_agent.drivers.base import ActionFailed


async def warmup_logon(
    *,
    base_url: str,
    install_name: str,
    user: str,
    password: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """POST the logon form, then log off the session it opened; returns what happened."""
    inst = install_name.lower()
    form = {"User_Logon": user}
    if password:
        form["Password"] = password
    try:
        async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout) as client:
            page = await client.get(f"/{inst}/eware.dll/Logon")
            if page.status_code >= 500:
                raise ActionFailed(f"the logon page answered {page.status_code}: is IIS running?")
            resp = await client.post(f"/{inst}/eware.dll/Logon", data=form)
            if resp.status_code >= 400:
                raise ActionFailed(f"the warm-up logon answered {resp.status_code}")
            sid = resp.headers.get("X-CRM-SID")
            if sid is None:
                m = re.search(r"SID=(\d+)", resp.text)
                sid = m.group(1) if m else None
            closed = 0
            if sid is not None:
                off = await client.get(f"/{inst}/eware.dll/Logoff", params={"SID": sid})
                if off.status_code < 400 and off.headers.get("content-type", "").startswith(
                    "application/json"
                ):
                    closed = int(off.json().get("closed", 0))
    except httpx.HTTPError as exc:
        raise ActionFailed(f"the warm-up logon could not reach {base_url}: {type(exc).__name__}") from exc
    return {"logged_on": True, "status": resp.status_code, "sid": sid, "logged_off": closed}
