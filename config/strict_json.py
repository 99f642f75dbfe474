"""JSON as our services accept it: RFC 8259 and nothing looser.

Python's :func:`json.loads` takes things a hostile client can use to confuse two readers of the
same body or to exhaust the parser:

- a key given twice (``{"role": "viewer", "role": "admin"}``): the last one silently wins, while
  a proxy or a log that reads the first sees another request;
- ``NaN``, ``Infinity`` and numbers too large for a float (``1e400`` reads as ``inf``), which no
  JSON standard allows and which slip through ``ge``/``le`` bounds;
- nesting deep enough to hit the interpreter's recursion limit (``[[[[…`` → ``RecursionError``,
  a 500 where a 422 belongs).

:func:`loads` refuses all three with :class:`StrictJsonError` (a :class:`json.JSONDecodeError`,
so anything that already handles bad JSON handles these too).
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Deeper than any request we define (the deepest is a few levels); far below the recursion limit.
MAX_DEPTH = 32


class StrictJsonError(json.JSONDecodeError):
    """JSON that is well-formed for Python but refused by :func:`loads`."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _depth_ok(text: str) -> int:
    """The deepest nesting of ``text`` (strings skipped), stopping early past :data:`MAX_DEPTH`."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(data: bytes | str) -> Any:
    """Parse ``data`` strictly; raise :class:`StrictJsonError` for what :mod:`json` would let by."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise StrictJsonError("the body is not UTF-8", "", exc.start) from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_ok(text) > MAX_DEPTH:
        raise StrictJsonError(f"nested deeper than {MAX_DEPTH} levels", text[:100], 0)
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        raise StrictJsonError(str(exc), text[:100], 0) from None
