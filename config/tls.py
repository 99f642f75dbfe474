"""TLS with pinning: every service serves HTTPS given a certificate and key
(``CRMCLUSTER_TLS_CERT_FILE``, ``CRMCLUSTER_TLS_KEY_FILE``), and each side verifies the other
against a CA it is given or a certificate pinned by its fingerprint (as Octopus Tentacle pins
thumbprints).

- :func:`new_certificate` makes a self-signed pair for a node (``crmcluster tls new-cert``);
  :func:`fingerprint` is the SHA-256 of the certificate (``AB:CD:…``), what an administrator
  compares and gives to the other side.
- :func:`fetch_certificate` reads the certificate a server presents (verifying nothing): the
  controller does it once, when it registers an agent, and pins what it got — after checking it
  against the fingerprint it was given, if any.
- :func:`pinned_context` trusts exactly one certificate: the pinned one (a self-signed
  certificate is its own trust anchor; a CA-issued one is accepted as a partial chain); anything
  else fails the handshake, before a token is sent. :func:`ca_context` trusts a CA's certificates
  (host names checked).
- :func:`check_listen`: plain HTTP is refused on an address other machines reach, unless
  ``CRMCLUSTER_ALLOW_PLAIN_HTTP`` says so — then a warning at every start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import re
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from config.errors import SettingError

log = logging.getLogger("crmcluster.security")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class TlsError(Exception):
    pass


def fingerprint(cert_pem: str | bytes) -> str:
    """The certificate's SHA-256 fingerprint, ``AB:CD:…`` (as ``openssl x509 -fingerprint -sha256``)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode() if isinstance(cert_pem, str) else cert_pem)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normal_fingerprint(value: str) -> str:
    """A fingerprint in either form (``AB:CD…``, ``abcd…``, ``sha256:…``) as 64 lower-case hex digits."""
    raw = value.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if not _HEX.match(raw):
        raise ValueError("a SHA-256 fingerprint is 64 hexadecimal digits (AB:CD:… or abcd…)")
    return raw


def same_fingerprint(cert_pem: str, expected: str) -> bool:
    return normal_fingerprint(fingerprint(cert_pem)) == normal_fingerprint(expected)


def new_certificate(common_name: str, hosts: list[str], *, days: int = 825) -> tuple[str, str]:
    """A self-signed certificate (P-256) for ``hosts`` (names and addresses) and its key, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = []
    for host in hosts or [common_name]:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_pem, key_pem


async def fetch_certificate(host: str, port: int, *, timeout: float = 5.0) -> str:
    """The certificate ``host:port`` presents, as PEM (nothing verified: pin it, or compare it)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise TlsError(f"no TLS certificate from {host}:{port}: {type(exc).__name__}: {exc}") from exc
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
    if not der:
        raise TlsError(f"{host}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)


def pinned_context(cert_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly ``cert_pem`` (host names are not what is checked:
    the certificate itself is)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cert_pem)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def ca_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts the certificates ``ca_file``'s CA issued (host names checked)."""
    try:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise SettingError(f"{ca_file}: not a CA certificate file: {exc}") from exc


def server_ssl(settings: Any) -> dict[str, str]:
    """uvicorn's ``ssl_certfile``/``ssl_keyfile`` from the settings (empty: plain HTTP)."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise SettingError("CRMCLUSTER_TLS_CERT_FILE and CRMCLUSTER_TLS_KEY_FILE: set both, or neither")
    for path, what in ((cert, "CRMCLUSTER_TLS_CERT_FILE"), (key, "CRMCLUSTER_TLS_KEY_FILE")):
        if not Path(path).is_file():
            raise SettingError(f"{what}: {path} is not a file")
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(settings: Any, host: str, *, service: str) -> None:
    """Refuse plain HTTP on an address other machines reach, unless ``allow_plain_http``."""
    if server_ssl(settings) or is_loopback_host(host):
        return
    if not settings.allow_plain_http:
        raise SettingError(
            f"{service}: plain HTTP on {host} would carry tokens and license keys in clear; set "
            "CRMCLUSTER_TLS_CERT_FILE and CRMCLUSTER_TLS_KEY_FILE (crmcluster tls new-cert makes a "
            "pair), or CRMCLUSTER_ALLOW_PLAIN_HTTP=true behind a TLS proxy"
        )
    log.warning(
        "%s: serving plain HTTP on %s (CRMCLUSTER_ALLOW_PLAIN_HTTP): tokens and license keys cross "
        "the network in clear unless a TLS proxy is in front",
        service,
        host,
    )


class PeerTrust:
    """How a client verifies one https peer (the agent verifying its controller): the CA that
    issued its certificate, or the certificate's fingerprint (the certificate is read once, compared,
    then trusted alone), else the system's trusted CAs. ``await context()`` gives what httpx's
    ``verify=`` takes; :class:`TlsError` when the peer presents another certificate."""

    def __init__(self, url: str, *, ca_file: Path | None = None, fingerprint: str | None = None) -> None:
        from config.service_url import parse_service_url

        self.url = parse_service_url(url)
        self.ca_file = ca_file
        self.fingerprint = normal_fingerprint(fingerprint) if fingerprint else None
        self._context: ssl.SSLContext | None = None

    async def context(self, *, timeout: float = 5.0) -> ssl.SSLContext | bool:
        if self.url.scheme != "https":
            return True
        if self._context is not None:
            return self._context
        if self.ca_file is not None:
            self._context = ca_context(self.ca_file)
        elif self.fingerprint is not None:
            pem = await fetch_certificate(self.url.host, self.url.port, timeout=timeout)
            if not same_fingerprint(pem, self.fingerprint):
                raise TlsError(
                    f"{self.url} presents a certificate of fingerprint {fingerprint(pem)}, not the one "
                    "configured (CRMCLUSTER_CONTROLLER_FINGERPRINT): nothing is sent to it"
                )
            self._context = pinned_context(pem)
        else:
            return True
        return self._context


async def trusted(trust: PeerTrust | None, sleep: Any, interval: float, what: str) -> ssl.SSLContext | bool:
    """``trust``'s context, asked again every ``interval`` seconds until the peer can be verified."""
    while True:
        try:
            return True if trust is None else await trust.context()
        except TlsError as exc:
            log.warning("%s: %s", what, exc)
            await sleep(interval)
