"""URLs of our own services (an agent, the controller), parsed into scheme, host and port.

The controller sends an agent its token and the license key, so where it sends them is checked
as strictly as a login: :func:`parse_service_url` accepts ``http``/``https``, a DNS name or an IP
address, an optional port and a plain path — nothing else (no user info, query, fragment, white
space, non-ASCII, ``127.1``-style shorthand addresses). It raises :class:`BadServiceUrl` (a
``ValueError``: a 422 in a request model) where ``httpx`` would raise ``InvalidURL`` later — or,
worse, quietly connect somewhere else.

:func:`check_destination` then refuses the addresses a server must never be made to call
(SSRF): link-local ones, cloud metadata endpoints (``169.254.169.254``, ``fd00:ec2::254``,
``metadata.google.internal`` …) unless a setting allows them, and unspecified, multicast or
broadcast addresses always. Names are checked as written, not resolved (a name that resolves to a
metadata address is the DNS administrator's to prevent; docs/security.md says so).

    url = parse_service_url("https://crm2.example.com:8701")
    url.host, url.port, url.is_loopback        # 'crm2.example.com', 8701, False
    check_destination(url, allow_link_local=False)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

MAX_URL = 500
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_PATH = re.compile(r"^(?:/[A-Za-z0-9._~-]*)*$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)$", re.S)
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BadServiceUrl(ValueError):
    pass


@dataclass(frozen=True)
class ServiceUrl:
    scheme: Literal["http", "https"]
    host: str
    port: int
    path: str = ""

    @property
    def address(self) -> IPAddress | None:
        """The host as an IP address, or None for a DNS name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def is_loopback(self) -> bool:
        addr = self.address
        if addr is None:
            return self.host.lower() in _LOOPBACK_NAMES
        return _plain(addr).is_loopback

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"


def _plain(addr: IPAddress) -> IPAddress:
    """``::ffff:169.254.169.254`` is 169.254.169.254."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _host(raw: str) -> str:
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise BadServiceUrl("an IPv6 address must be written in brackets: [::1]")
        try:
            return str(ipaddress.IPv6Address(raw[1:-1]))
        except ValueError:
            raise BadServiceUrl(f"{raw} is not an IPv6 address") from None
    if not raw:
        raise BadServiceUrl("the URL names no host")
    if re.fullmatch(r"[0-9.]+", raw):
        try:
            return str(ipaddress.IPv4Address(raw))
        except ValueError:
            raise BadServiceUrl(f"{raw} is not an IPv4 address (write all four parts)") from None
    if re.fullmatch(r"(?i)0x[0-9a-f.x]+", raw) or len(raw) > 253 or not _HOSTNAME.match(raw):
        raise BadServiceUrl(f"{raw!r} is not a host name")
    return raw.lower().rstrip(".")


def parse_service_url(value: str) -> ServiceUrl:
    """Parse ``value`` strictly (see the module docstring) or raise :class:`BadServiceUrl`."""
    if not isinstance(value, str) or not value:
        raise BadServiceUrl("a URL is required")
    if len(value) > MAX_URL:
        raise BadServiceUrl(f"the URL may be {MAX_URL} characters at most")
    if not value.isascii() or any(not c.isprintable() or c.isspace() for c in value):
        raise BadServiceUrl("the URL must be printable ASCII without white space")
    m = _URL.match(value)
    if m is None:
        raise BadServiceUrl("must be an http:// or https:// URL")
    scheme = m["scheme"].lower()
    if scheme not in ("http", "https"):
        raise BadServiceUrl(f"scheme {scheme!r} is not allowed; use http or https")
    authority, rest = m["authority"], m["rest"]
    if "@" in authority:
        raise BadServiceUrl("the URL must not carry a user name or password")
    if "?" in rest or "#" in rest:
        raise BadServiceUrl("the URL must not carry a query or fragment")
    path = rest.rstrip("/")
    if not _PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
        raise BadServiceUrl(f"path {rest!r} holds characters a service URL may not")
    if authority.startswith("["):
        host_raw, closed, after = authority.partition("]")
        if not closed:
            raise BadServiceUrl("an IPv6 address must be written in brackets: [::1]")
        host_raw += "]"
        if after and not after.startswith(":"):
            raise BadServiceUrl(f"{authority!r} is not host[:port]")
        port_raw = after[1:] if after else None
    else:
        host_raw, sep, port_raw_ = authority.partition(":")
        port_raw = port_raw_ if sep else None
    host = _host(host_raw)
    if port_raw is None:
        port = 443 if scheme == "https" else 80
    else:
        if not port_raw.isdigit() or len(port_raw) > 5 or not 1 <= int(port_raw) <= 65535:
            raise BadServiceUrl(f"port {port_raw!r} must be a number from 1 to 65535")
        port = int(port_raw)
    return ServiceUrl(scheme=scheme, host=host, port=port, path=path)  # type: ignore[arg-type]


def check_destination(url: ServiceUrl, *, allow_link_local: bool = False) -> None:
    """Refuse addresses a server must not call (see the module docstring); :class:`BadServiceUrl`."""
    addr = url.address
    if addr is None:
        if url.host in _METADATA_NAMES and not allow_link_local:
            raise BadServiceUrl(f"{url.host} is a cloud metadata service, not an agent")
        return
    plain = _plain(addr)
    if plain.is_unspecified or plain.is_multicast or plain == ipaddress.IPv4Address("255.255.255.255"):
        raise BadServiceUrl(f"{url.host} is not the address of one server")
    if allow_link_local:
        return
    if plain in _METADATA_ADDRESSES:
        raise BadServiceUrl(f"{url.host} is a cloud metadata service, not an agent")
    if plain.is_link_local:
        raise BadServiceUrl(
            f"{url.host} is a link-local address; set CRMCLUSTER_ALLOW_LINK_LOCAL_AGENTS=true if an agent "
            "really listens there"
        )
