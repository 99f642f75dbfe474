"""Secrets at rest and in text: Fernet encryption with ``CRMCLUSTER_SECRET_KEY`` and redaction.

Every log record, event, error message and stored row that crmcluster writes passes through
:func:`redact` (text) or :func:`redact_mapping` (structured data) first. Values the process has
seen as secrets are registered with :func:`register_secret` and replaced wherever they appear;
keys that name a secret (``password``, ``license_key``, ``token`` …) are masked whatever their value.

    box = SecretBox(settings.secret_key)
    stored = box.encrypt("ABCD-1234-EFGH")    # opaque token, safe to persist
    box.decrypt(stored)                        # "ABCD-1234-EFGH"
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

MASK = "***"
_SECRET_KEYS = re.compile(
    r"(pass(word|wd)?|pwd|secret|token|license_?key|api_?key|authorization|credential)", re.I
)
_INLINE = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)\b((?:password|pwd|passwd|license_?key|token|secret)\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s;,&]+)"
    ),
]
_known: set[str] = set()
_lock = threading.Lock()


class SecretBox:
    """Encrypts and decrypts short secrets with a Fernet key."""

    def __init__(self, key: SecretStr | str) -> None:
        raw = key.get_secret_value() if isinstance(key, SecretStr) else key
        self._fernet = Fernet(raw.encode())

    def encrypt(self, value: str) -> str:
        register_secret(value)
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            value = self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("stored secret cannot be decrypted with this CRMCLUSTER_SECRET_KEY") from exc
        register_secret(value)
        return value


def secret_hash(value: str) -> str:
    """A stable, non-reversible fingerprint of a secret (what a license check may keep)."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def register_secret(value: str | SecretStr | None) -> None:
    """Remember a secret value so :func:`redact` masks it wherever it shows up."""
    if value is None:
        return
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if len(raw) >= 4:
        with _lock:
            _known.add(raw)


def redact(text: str) -> str:
    """Mask registered secret values and inline ``password=…``/``Bearer …`` forms in ``text``."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    for pattern in _INLINE:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEYS.search(key))


def redact_mapping(data: Any) -> Any:
    """A copy of ``data`` (dicts, lists, scalars) with secret-named keys and known secrets masked."""
    if isinstance(data, SecretStr):
        return MASK
    if isinstance(data, Mapping):
        return {
            k: (MASK if is_secret_key(str(k)) and v not in (None, "") else redact_mapping(v))
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact_mapping(v) for v in data]
    if isinstance(data, str):
        return redact(data)
    return data


class RedactingFilter(logging.Filter):
    """A logging filter that renders the message and masks secrets in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Attach :class:`RedactingFilter` to every handler of ``logger`` (root by default)."""
    target = logger or logging.getLogger()
    flt = RedactingFilter()
    target.addFilter(flt)
    for handler in target.handlers:
        handler.addFilter(flt)
