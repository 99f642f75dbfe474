"""Turning ``key=value`` words from the command line into the controller's JSON fields."""

from __future__ import annotations

from typing import Any

from crmcluster.client.http import ClientError

#: ``config set`` fields (DESIGN.md "Controller contract", PUT /cluster/config) and their types.
CONFIG_FIELDS: dict[str, str] = {
    "server_names": "list",
    "fq_server_names": "list",
    "do_load_balancing": "bool",
    "dtls_server_name": "str",
    "http_port": "int",
    "outlook_port": "int",
    "doc_store": "str",
    "doc_templates": "str",
}
#: The default Custom_SysParams row names, accepted as aliases (``ServerNames=crm1;crm2``).
ROW_ALIASES = {
    "servernames": "server_names",
    "fqservernames": "fq_server_names",
    "doloadbalancing": "do_load_balancing",
    "dtlsservername": "dtls_server_name",
    "httpport": "http_port",
    "outlookport": "outlook_port",
    "docstore": "doc_store",
    "doctemplates": "doc_templates",
}
_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}


class BadArgument(ClientError):
    """A ``key=value`` word the command cannot use (exit code 2)."""


def split_pair(word: str) -> tuple[str, str]:
    key, sep, value = word.partition("=")
    if not sep or not key.strip():
        raise BadArgument(f"{word!r}: expected key=value")
    return key.strip(), value.strip()


def config_field(key: str) -> str:
    norm = key.strip().lower().replace("-", "_")
    norm = ROW_ALIASES.get(norm.replace("_", ""), norm)
    if norm not in CONFIG_FIELDS:
        raise BadArgument(f"{key!r}: not a cluster setting; one of {', '.join(CONFIG_FIELDS)}")
    return norm


def parse_bool(text: str, *, what: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise BadArgument(f"{what}: {text!r} is not true/false")


def config_body(words: list[str]) -> dict[str, Any]:
    """``["server_names=crm1;crm2", "http_port=443"]`` → the partial PUT /cluster/config body."""
    if not words:
        raise BadArgument("nothing to set: give key=value pairs, e.g. do_load_balancing=false")
    body: dict[str, Any] = {}
    for word in words:
        key, value = split_pair(word)
        name = config_field(key)
        kind = CONFIG_FIELDS[name]
        if kind == "list":
            sep = ";" if ";" in value else ","
            body[name] = [v.strip() for v in value.split(sep) if v.strip()]
        elif kind == "bool":
            body[name] = parse_bool(value, what=name)
        elif kind == "int":
            try:
                body[name] = int(value)
            except ValueError:
                raise BadArgument(f"{name}: {value!r} is not a whole number") from None
        else:
            body[name] = value
    return body


def pairs_body(words: list[str]) -> dict[str, str | None]:
    """``["indexer=crm2", "escalation="]`` → ``{"indexer": "crm2", "escalation": None}``."""
    if not words:
        raise BadArgument("nothing to set: give service=server pairs, e.g. indexer=crm2")
    out: dict[str, str | None] = {}
    for word in words:
        key, value = split_pair(word)
        out[key.lower().replace("-", "_")] = value or None
    return out
