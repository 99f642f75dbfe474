"""Windows paths that come from a request: relative paths under an agent's roots, and UNC paths of
the document library — normalised, then refused where Windows would read them otherwise.

Windows quietly drops trailing dots and spaces from a path component (``backup.`` is ``backup``),
opens a *device* for a reserved name in any folder and with any extension (``NUL``, ``con.txt``,
``COM1``), and treats fullwidth or compatibility characters as their plain forms after
normalisation (two FULLWIDTH FULL STOPs become ``..``). So every path is first normalised to Unicode NFKC and
only then checked; what passes is returned in that normal form.

- :func:`relative_path`: 1 to 260 characters, no drive, root, UNC or device form, no ``.``/``..``
  components, no ``:`` (alternate data streams), none of ``<>"|?*``, no component ending in a dot
  or a space, no reserved device name. Returns it with ``/`` separators.
- :func:`unc_path`: ``\\\\server\\share[\\folder…]`` with a DNS name or IPv4 address as server, a
  share that is not an administrative or hidden one (``C$``, ``ADMIN$``, ``IPC$`` — any ``…$``),
  and folders by the same rules as above.
- :func:`unc_share`: ``("server", "share")`` of a UNC path, lower-cased, for "within the
  configured share" checks (:func:`within_shares`).
"""

from __future__ import annotations

import re
import unicodedata

MAX_PATH = 260
_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$", "clock$"}
    | {f"com{i}" for i in range(10)}
    | {f"lpt{i}" for i in range(10)}
)
_FORBIDDEN = set('<>"|?*')
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*)$")
_IPV4 = re.compile(r"^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$")


class BadPath(ValueError):
    pass


def _component(part: str) -> None:
    if part in (".", ".."):
        raise BadPath("path must not contain '.' or '..' components")
    if part != part.rstrip(". "):
        raise BadPath(f"path component {part!r} ends in a dot or a space (Windows drops them)")
    stem = part.split(".", 1)[0].rstrip(" ").lower()
    if stem in _DEVICE_NAMES:
        raise BadPath(f"path component {part!r} is a Windows device name")
    if any(ord(c) < 32 or c in _FORBIDDEN for c in part) or ":" in part:
        raise BadPath(f"path component {part!r} holds characters a Windows path may not")


def normalise(value: str) -> str:
    return unicodedata.normalize("NFKC", value)


def relative_path(value: str) -> str:
    """A path relative to one of the agent's roots, normalised; :class:`BadPath` otherwise."""
    if not isinstance(value, str):
        raise BadPath("path must be a string")
    norm = normalise(value)
    if not norm or len(norm) > MAX_PATH:
        raise BadPath(f"path must be 1 to {MAX_PATH} characters")
    if any(ord(c) < 32 for c in norm):
        raise BadPath("path holds control characters")
    slashed = norm.replace("\\", "/")
    if slashed.startswith("/") or re.match(r"^[A-Za-z]:", slashed):
        raise BadPath("path must be relative to the agent's configured root, not absolute")
    if ":" in slashed:
        raise BadPath("path must not contain ':' (drives, alternate data streams)")
    parts = [p for p in slashed.split("/") if p]
    if not parts:
        raise BadPath("path names no folder")
    for part in parts:
        _component(part)
    return "/".join(parts)


def unc_path(value: str) -> str:
    """A plain UNC path of a file share, normalised; :class:`BadPath` otherwise."""
    if not isinstance(value, str):
        raise BadPath("must be a UNC path like \\\\server\\share\\folder")
    norm = normalise(value)
    if len(norm) > MAX_PATH or not norm.startswith("\\\\") or "/" in norm:
        raise BadPath("must be a UNC path like \\\\server\\share\\folder")
    parts = norm[2:].rstrip("\\").split("\\")
    if len(parts) < 2 or any(not p for p in parts):
        raise BadPath("must be a UNC path like \\\\server\\share\\folder")
    host, share, folders = parts[0], parts[1], parts[2:]
    if not (_IPV4.match(host) or (_HOST.match(host) and not re.fullmatch(r"[0-9.]+", host))):
        raise BadPath(f"{host!r} is not a server name (device paths like \\\\?\\ are not shares)")
    if share.endswith("$"):
        raise BadPath(f"{share!r} is an administrative or hidden share; name the library's own share")
    for part in (share, *folders):
        _component(part)
    return "\\\\" + "\\".join(parts)


def unc_share(value: str) -> tuple[str, str]:
    """``\\\\FileServer\\CRMLibrary\\Library`` → ``("fileserver", "crmlibrary")``."""
    parts = unc_path(value)[2:].split("\\")
    return parts[0].lower(), parts[1].lower()


def within_shares(value: str, shares: list[str]) -> bool:
    """True when ``value`` lies on one of ``shares`` (UNC paths; their server and share count)."""
    mine = unc_share(value)
    return any(mine == unc_share(s) for s in shares)
