"""The multi-server settings Sage CRM keeps in ``Custom_SysParams`` (the guide's "Configuring
multi-server Sage CRM": CRM Server Names, Do Load Balancing, DTLS Server Name, Fully qualified CRM
Web Server Names, plus HTTPPort/OutlookPort and the document library paths). ``use_https`` is
crmcluster's own row (``crmcluster_UseHTTPS``, Y/N; absent: not said): Sage publishes no row for
the wizard's "Use HTTPS", and the balancer's redirects need the scheme.

Rows are ``(Parm_Name, Parm_Value, Parm_Deleted)``; only rows with ``Parm_Deleted`` NULL count.
:func:`read_cluster_config` reads them into :class:`ClusterConfig`; :func:`write_cluster_config`
validates a (partial) change against the whole configuration and writes only the rows it owns
that changed, leaving every other row untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from config.crm_schema import CrmTables
from config.errors import SysParamsError
from config.windows_paths import BadPath, unc_path

_SERVER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_IPV4 = re.compile(r"^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$")
_TRUE = {"y", "yes", "true", "t", "1", "on"}
_FALSE = {"n", "no", "false", "f", "0", "off", ""}

FIELDS = (
    "server_names",
    "do_load_balancing",
    "dtls_server_name",
    "fq_server_names",
    "http_port",
    "outlook_port",
    "doc_store",
    "doc_templates",
    "use_https",
)


# Parsing and formatting of single values --------------------------------------------------------
def parse_list(value: str | None) -> list[str]:
    """``"crm1; crm2;"`` → ``["crm1", "crm2"]`` (white space trimmed, empty entries dropped)."""
    if not value:
        return []
    return [part.strip() for part in value.split(";") if part.strip()]


def format_list(items: list[str]) -> str:
    return ";".join(items)


def parse_bool(value: str | None, *, field: str = "do_load_balancing") -> bool:
    """Lenient: Y/N, 1/0, True/False, yes/no, on/off (any case). A missing row is false."""
    if value is None:
        return False
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    label = {"do_load_balancing": "Do Load Balancing"}.get(field, field)
    raise SysParamsError(field, f"{label} must be Y or N, not {value!r}")


def format_bool(value: bool) -> str:
    return "Y" if value else "N"


def parse_port(field: str, value: str | int | None) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SysParamsError(field, f"{field} must be a whole number, not {value!r}") from None
    if not 1 <= port <= 65535:
        raise SysParamsError(field, f"{field} must be between 1 and 65535, not {port}")
    return port


def split_host_port(entry: str) -> tuple[str, int | None]:
    """``"crm1.example.com:8443"`` → ``("crm1.example.com", 8443)``; ``[::1]:80`` is allowed too."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return host, (int(port) if port and port.isdigit() else None) if port else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if not port.isdigit():
            raise ValueError(port)
        return host, int(port)
    return entry, None


def is_unc(path: str) -> bool:
    """A plain UNC path ``\\\\server\\share[\\dir…]`` of a file share (see
    :func:`config.windows_paths.unc_path`: no device forms, admin shares, ``..``, trailing dots)."""
    try:
        unc_path(path)
    except BadPath:
        return False
    return True


# The model --------------------------------------------------------------------------------------
class ClusterConfig(BaseModel):
    """The cluster's multi-server settings. Build with :meth:`checked` to validate the rules."""

    model_config = ConfigDict(frozen=True)

    server_names: list[str] = []
    fq_server_names: list[str] = []
    do_load_balancing: bool = False
    dtls_server_name: str | None = None
    http_port: int | None = None
    outlook_port: int | None = None
    doc_store: str | None = None
    doc_templates: str | None = None
    #: None: the row is absent (the balancer keeps its own ``scheme`` setting).
    use_https: bool | None = None

    @classmethod
    def checked(cls, **values: Any) -> ClusterConfig:
        """Validate every rule and return the config, or raise :class:`SysParamsError`."""
        return cls._checked(values, lenient=False)

    @classmethod
    def lenient(cls, **values: Any) -> ClusterConfig:
        """As :meth:`checked`, for reading what is in the table: a field routing does not use that
        contradicts another (a DTLS server not among the server names) is kept as it is —
        :meth:`problems` names it — so a new server list is never refused because of it."""
        return cls._checked(values, lenient=True)

    @classmethod
    def _checked(cls, values: dict[str, Any], *, lenient: bool) -> ClusterConfig:
        names = values.get("server_names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SysParamsError("server_names", "server_names must be a list of names")
        names = [n.strip() for n in names]
        seen: set[str] = set()
        for n in names:
            if not _SERVER_NAME.match(n):
                raise SysParamsError(
                    "server_names",
                    f"invalid server name {n!r}: use letters, digits, - and _ (63 at most), no ';'",
                )
            if n.lower() in seen:
                raise SysParamsError("server_names", f"server name {n!r} appears twice")
            seen.add(n.lower())
        fq = values.get("fq_server_names")
        if fq is None or fq == []:
            fq = []
        if not isinstance(fq, list) or not all(isinstance(e, str) for e in fq):
            raise SysParamsError("fq_server_names", "fq_server_names must be a list of host names")
        fq = [e.strip() for e in fq]
        if fq and len(fq) != len(names):
            raise SysParamsError(
                "fq_server_names",
                f"fq_server_names has {len(fq)} entries but server_names has {len(names)}; "
                "they must pair up in the same order",
            )
        for entry in fq:
            try:
                host, port = split_host_port(entry)
            except ValueError:
                raise SysParamsError("fq_server_names", f"invalid port in {entry!r}") from None
            if not (_HOSTNAME.match(host) or _IPV4.match(host) or (":" in host and entry.startswith("["))):
                raise SysParamsError("fq_server_names", f"invalid fully qualified name {entry!r}")
            if port is not None and not 1 <= port <= 65535:
                raise SysParamsError("fq_server_names", f"port out of range in {entry!r}")
        dtls = values.get("dtls_server_name") or None
        if dtls is not None:
            if not isinstance(dtls, str):
                raise SysParamsError("dtls_server_name", "dtls_server_name must be a server name")
            dtls = dtls.strip()
            if dtls.lower() not in seen and not lenient:
                raise SysParamsError(
                    "dtls_server_name", f"DTLS server {dtls!r} is not one of the CRM server names"
                )
        dlb = values.get("do_load_balancing", False)
        if isinstance(dlb, str):
            dlb = parse_bool(dlb)
        if not isinstance(dlb, bool):
            raise SysParamsError("do_load_balancing", "do_load_balancing must be true or false")
        ports = {f: parse_port(f, values.get(f)) for f in ("http_port", "outlook_port")}
        paths: dict[str, str | None] = {}
        for f in ("doc_store", "doc_templates"):
            p = values.get(f) or None
            if p is not None and (not isinstance(p, str) or not is_unc(p)):
                raise SysParamsError(f, f"{f} must be a UNC path like \\\\server\\share\\folder, not {p!r}")
            paths[f] = p
        https = values.get("use_https")
        if isinstance(https, str):
            https = parse_bool(https, field="use_https") if https.strip() else None
        if https is not None and not isinstance(https, bool):
            raise SysParamsError("use_https", "use_https must be true or false")
        return cls(
            server_names=names,
            fq_server_names=fq,
            do_load_balancing=dlb,
            dtls_server_name=dtls,
            **ports,
            **paths,
            use_https=https,
        )

    def problems(self) -> list[tuple[str, str]]:
        """Inconsistencies a lenient read kept, as ``(field, message)``."""
        names = {n.lower() for n in self.server_names}
        if self.dtls_server_name and self.dtls_server_name.lower() not in names:
            return [
                (
                    "dtls_server_name",
                    f"DTLSServerName {self.dtls_server_name!r} is not one of ServerNames",
                )
            ]
        return []

    def fq_for(self, server: str) -> str:
        """The fully qualified entry of ``server`` (its own name when no FQ list is set)."""
        i = self.server_names.index(server)
        return self.fq_server_names[i] if self.fq_server_names else server

    @property
    def scheme(self) -> str | None:
        """``https``/``http`` as ``use_https`` says; None when the row is absent."""
        return None if self.use_https is None else ("https" if self.use_https else "http")

    def web_address(self, server: str) -> str:
        """Where users reach ``server``: its FQ entry, with HTTPPort added when HTTPS is on a port
        other than 443 and the entry names none."""
        entry = self.fq_for(server)
        if self.use_https and self.http_port not in (None, 443) and split_host_port(entry)[1] is None:
            return f"{entry}:{self.http_port}"
        return entry

    def ip_addresses_in_fq(self) -> list[str]:
        """FQ entries that are addresses: with HTTPS they must be DNS names (the certificate's)."""
        return [e for e in self.fq_server_names if _IPV4.match(split_host_port(e)[0]) or e.startswith("[")]


# Reading and writing ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SysParamsStore:
    """Reads and writes :class:`ClusterConfig` through the configured table and row names."""

    tables: CrmTables
    row_names: Mapping[str, str]  # JSON field -> Parm_Name

    async def read_raw(self, conn: AsyncConnection) -> dict[str, str | None]:
        """The live (not deleted) values of our rows, keyed by JSON field.

        Only ``Parm_Name``, ``Parm_Value`` and ``Parm_Deleted`` are read: Sage's real table has more
        columns and its key column may be named otherwise. Sage keeps one live row per name; should
        there be several, the last one read wins."""
        t = self.tables
        name_col, value_col = t.parm("parm_name"), t.parm("parm_value")
        by_row = {v: k for k, v in self.row_names.items()}
        rows = await conn.execute(
            select(name_col, value_col).where(name_col.in_(list(by_row)), t.parm("parm_deleted").is_(None))
        )
        out: dict[str, str | None] = {}
        for name, value in rows:
            out[by_row[name]] = value
        return out

    async def read(self, conn: AsyncConnection) -> ClusterConfig:
        raw = await self.read_raw(conn)
        return config_from_raw(raw)

    async def write(self, conn: AsyncConnection, changes: Mapping[str, Any]) -> ClusterConfig:
        """Apply a partial change (JSON field → value), validated against the whole config.

        Runs inside the caller's transaction. Only rows whose value changes are written; rows we
        do not own, and deleted rows, are never touched.
        """
        unknown = set(changes) - set(FIELDS)
        if unknown:
            field = sorted(unknown)[0]
            raise SysParamsError(field, f"unknown setting {field!r}; known: {', '.join(FIELDS)}")
        old_raw = await self.read_raw(conn)
        merged = config_from_raw(old_raw).model_dump() | dict(changes)
        # A change that names neither the servers nor the DTLS server is not refused for an
        # inconsistency already in the table (it stays a warning).
        lenient = not ({"server_names", "dtls_server_name"} & set(changes))
        new = ClusterConfig.lenient(**merged) if lenient else ClusterConfig.checked(**merged)
        new_raw = config_to_raw(new)
        t = self.tables
        for field in changes:
            value = new_raw[field]
            if field in old_raw and old_raw[field] == value:
                continue
            row = self.row_names[field]
            live = (t.parm("parm_name") == row) & t.parm("parm_deleted").is_(None)
            result = await conn.execute(update(t.sysparams).where(live).values({t.names.parm_value: value}))
            if result.rowcount == 0:
                await conn.execute(
                    t.sysparams.insert().values(
                        {t.names.parm_name: row, t.names.parm_value: value, t.names.parm_deleted: None}
                    )
                )
        return new


def config_from_raw(raw: Mapping[str, str | None]) -> ClusterConfig:
    """What the table holds, read leniently (see :meth:`ClusterConfig.checked`)."""
    return ClusterConfig.lenient(
        server_names=parse_list(raw.get("server_names")),
        fq_server_names=parse_list(raw.get("fq_server_names")),
        do_load_balancing=parse_bool(raw.get("do_load_balancing")),
        dtls_server_name=(raw.get("dtls_server_name") or "").strip() or None,
        http_port=raw.get("http_port"),
        outlook_port=raw.get("outlook_port"),
        doc_store=(raw.get("doc_store") or "").strip() or None,
        doc_templates=(raw.get("doc_templates") or "").strip() or None,
        use_https=raw.get("use_https"),
    )


def config_to_raw(cfg: ClusterConfig) -> dict[str, str | None]:
    return {
        "server_names": format_list(cfg.server_names),
        "fq_server_names": format_list(cfg.fq_server_names),
        "do_load_balancing": format_bool(cfg.do_load_balancing),
        "dtls_server_name": cfg.dtls_server_name or "",
        "http_port": str(cfg.http_port) if cfg.http_port is not None else "",
        "outlook_port": str(cfg.outlook_port) if cfg.outlook_port is not None else "",
        "doc_store": cfg.doc_store or "",
        "doc_templates": cfg.doc_templates or "",
        "use_https": "" if cfg.use_https is None else format_bool(cfg.use_https),
    }
