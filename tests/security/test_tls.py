"""TLS with pinning, over real TLS sockets on 127.0.0.1: ``crmcluster tls new-cert`` makes a pair
and prints its fingerprint; the controller pins an agent's certificate at registration (checked
against the fingerprint given) or trusts the agents' CA, and an impostor at the agent's address
gets no request, let alone a token; the agent verifies the controller the same way; plain HTTP
is refused on an address other machines reach unless a setting allows it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import stat
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from config.errors import SettingError
from config.settings import ControllerSettings
from config.state_schema import node_credentials
from config.tls import PeerTrust, TlsError, check_listen, fingerprint, new_certificate, pinned_context
from crmcluster.cli import app as cli
from node_agent.testing import sandbox_agent_app
from tests.controller.conftest import FakeClock, Harness, make_settings, start_controller
from tests.security.served import Served


def pair(tmp: Path, name: str, hosts: list[str] | None = None) -> tuple[Path, Path, str]:
    cert, key = new_certificate(name, hosts or ["127.0.0.1"])
    (tmp / f"{name}.crt").write_text(cert)
    (tmp / f"{name}.key").write_text(key)
    return tmp / f"{name}.crt", tmp / f"{name}.key", fingerprint(cert)


def ca_and_leaf(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA certificate, and a certificate for 127.0.0.1 it issued (with its key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crmcluster test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crm1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return tmp / "ca.crt", tmp / "leaf.crt", tmp / "leaf.key"


class Recorder:
    """An impostor: answers every request and remembers its headers."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps({"forged": True}).encode()})


@pytest.fixture
async def real_controller(
    crm_engine: AsyncEngine, db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    """A controller that reaches agents over real sockets (no in-process transport)."""
    settings = make_settings(db_url, tokens, secret_key, tmp_path, agent_request_timeout=5.0)
    async with AsyncExitStack() as stack:
        yield await start_controller(
            stack, settings, clock=FakeClock(), tokens=tokens, transport_for=lambda _u: None
        )


def tls_agent(tmp_path: Path, token: str, cert: Path, key: Path, *, port: int = 0) -> Served:
    app = sandbox_agent_app(
        "crm1", tmp_path / "crm1", f"sqlite+aiosqlite:///{tmp_path / 'agent-crm.db'}", token=token
    )
    return Served(app, port=port, cert=cert, key=key)


def test_new_cert_prints_the_fingerprint_and_keeps_the_key_private(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "tls",
            "new-cert",
            "--name",
            "crm1",
            "--host",
            "crm1.example.com",
            "--host",
            "10.0.0.5",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    cert = Path(made["certificate"]).read_text()
    assert made["fingerprint"] == fingerprint(cert) and len(made["fingerprint"]) == 95
    parsed = x509.load_pem_x509_certificate(cert.encode())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["crm1.example.com"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert stat.S_IMODE(Path(made["key"]).stat().st_mode) == 0o600
    again = CliRunner().invoke(cli, ["tls", "new-cert", "--name", "crm1", "--out", str(tmp_path)])
    assert again.exit_code == 1  # never overwrites a key


async def test_the_controller_pins_the_agents_certificate(real_controller: Harness, tmp_path: Path) -> None:
    h = real_controller
    cert, key, fp = pair(tmp_path, "crm1")
    token = await h.node_token("crm1")
    with tls_agent(tmp_path, token, cert, key) as url:
        wrong = "AB" + fp[2:] if not fp.startswith("AB") else "CD" + fp[2:]
        refused = await h.client.post(
            "/api/v1/nodes", json={"name": "crm1", "agent_url": url, "tls_fingerprint": wrong}
        )
        assert refused.status_code == 422 and fp in refused.text
        assert (await h.client.get("/api/v1/nodes")).json()["nodes"] == []
        reg = await h.client.post(
            "/api/v1/nodes", json={"name": "crm1", "agent_url": url, "tls_fingerprint": fp}
        )
        assert reg.status_code == 201, reg.text
        assert reg.json()["state"] == "up"  # its status was read over the pinned connection
        async with h.ctx.state_engine.connect() as conn:
            row = (
                await conn.execute(select(node_credentials).where(node_credentials.c.node == "crm1"))
            ).one()
        assert row.tls_fingerprint == fp and row.tls_certificate == cert.read_text()
        located = await h.client.get("/api/v1/replication-engine")
        assert located.status_code == 200, located.text
        port = int(url.rsplit(":", 1)[1])
    # An impostor at the same address, with a certificate of its own: the handshake fails, so it
    # never sees a request (nor the token it would carry).
    other_cert, other_key, _ = pair(tmp_path, "impostor")
    impostor = Recorder()
    with Served(impostor, port=port, cert=other_cert, key=other_key):
        await h.ctx.agents.aclose()  # no kept-alive connection to the real agent
        resp = await h.client.get("/api/v1/services")
        assert resp.status_code in (200, 503)
        view = (await h.client.get("/api/v1/replication-engine")).json()
        assert view.get("node") is None
    assert impostor.seen == []


async def test_without_a_fingerprint_the_first_certificate_is_pinned(
    real_controller: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = real_controller
    cert, key, fp = pair(tmp_path, "crm1")
    caplog.set_level(logging.WARNING, logger="crmcluster.security")
    with tls_agent(tmp_path, await h.node_token("crm1"), cert, key) as url:
        reg = await h.client.post("/api/v1/nodes", json={"name": "crm1", "agent_url": url})
        assert reg.status_code == 201, reg.text
    assert any("pinned on first use" in r.getMessage() and fp in r.getMessage() for r in caplog.records)
    assert await h.ctx.node_tokens.pinned(node="crm1") == cert.read_text()


async def test_with_a_ca_the_agents_certificate_must_be_issued_by_it(
    crm_engine: AsyncEngine, db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    ca, leaf, leaf_key = ca_and_leaf(tmp_path)
    settings = make_settings(
        db_url, tokens, secret_key, tmp_path, agent_ca_file=ca, agent_request_timeout=5.0
    )
    async with AsyncExitStack() as stack:
        h = await start_controller(
            stack, settings, clock=FakeClock(), tokens=tokens, transport_for=lambda _u: None
        )
        with tls_agent(tmp_path, await h.node_token("crm1"), leaf, leaf_key) as url:
            reg = await h.client.post("/api/v1/nodes", json={"name": "crm1", "agent_url": url})
            assert reg.status_code == 201 and reg.json()["state"] == "up", reg.text
            port = int(url.rsplit(":", 1)[1])
        self_cert, self_key, _ = pair(tmp_path, "selfsigned")
        impostor = Recorder()
        with Served(impostor, port=port, cert=self_cert, key=self_key):
            await h.ctx.agents.aclose()
            assert (await h.client.get("/api/v1/replication-engine")).json().get("node") is None
        assert impostor.seen == []


async def test_the_agent_verifies_the_controller_by_fingerprint(tmp_path: Path, secret_key: str) -> None:
    cert, key, fp = pair(tmp_path, "controller")
    settings = ControllerSettings(
        _env_file=None, admin_token="admin-" + "a" * 30, secret_key=secret_key, data_dir=tmp_path / "c"
    )
    from controller.app import create_app

    with Served(create_app(settings, watch=False), cert=cert, key=key) as url:
        trust = PeerTrust(url, fingerprint=fp)
        verify = await trust.context()
        async with httpx.AsyncClient(verify=verify) as client:
            assert (await client.get(url + "/healthz")).status_code == 200
        with pytest.raises(TlsError, match="not the one configured"):
            await PeerTrust(url, fingerprint="00" * 32).context()
        # Without a fingerprint or a CA the system's CAs decide: a self-signed controller fails.
        async with httpx.AsyncClient(verify=await PeerTrust(url).context()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url + "/healthz")
        port = int(url.rsplit(":", 1)[1])
    other_cert, other_key, _ = pair(tmp_path, "impostor")
    with Served(Recorder(), port=port, cert=other_cert, key=other_key):
        with pytest.raises(TlsError):
            await PeerTrust(f"https://127.0.0.1:{port}", fingerprint=fp).context()


async def test_heartbeats_go_over_the_verified_connection(
    tmp_path: Path, secret_key: str, db_url: str
) -> None:
    """The agent's own heartbeat loop, to a TLS controller it verifies by fingerprint."""
    cert, key, fp = pair(tmp_path, "controller")
    settings = ControllerSettings(
        _env_file=None,
        admin_token="admin-" + "a" * 30,
        secret_key=secret_key,
        data_dir=tmp_path / "c",
        state_db_url=db_url,
        crm_db_url=db_url,
    )
    from controller.app import create_app

    with Served(create_app(settings, watch=False), cert=cert, key=key) as url:
        admin = {"Authorization": "Bearer " + "admin-" + "a" * 30}
        async with httpx.AsyncClient(verify=pinned_context(cert.read_text()), headers=admin) as c:
            reg = await c.post(
                url + "/api/v1/nodes", json={"name": "crm1", "agent_url": "http://crm1.invalid:8701"}
            )
            assert reg.status_code == 201, reg.text
            token = reg.json()["agent_token"]
        agent = sandbox_agent_app(
            "crm1",
            tmp_path / "crm1",
            f"sqlite+aiosqlite:///{tmp_path / 'agent-crm.db'}",
            token=token,
            controller_url=url,
            controller_fingerprint=fp,
            heartbeat_interval=0.1,
            app_kwargs={"background": True},
        )
        async with agent.router.lifespan_context(agent):
            sender = agent.state.heartbeat
            for _ in range(100):
                if sender.sent:
                    break
                await asyncio.sleep(0.05)
            assert sender.sent >= 1
        async with httpx.AsyncClient(verify=pinned_context(cert.read_text()), headers=admin) as c:
            node = (await c.get(url + "/api/v1/nodes/crm1")).json()
        assert node["last_heartbeat"] is not None


def test_plain_http_off_loopback_is_refused_unless_allowed(
    tmp_path: Path, secret_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    def settings(**kw: Any) -> ControllerSettings:
        return ControllerSettings(
            _env_file=None, admin_token="admin-" + "a" * 30, secret_key=secret_key, **kw
        )

    everywhere = "0.0.0.0"  # noqa: S104 - what a site's unit listens on; nothing is bound here
    check_listen(settings(), "127.0.0.1", service="controller")  # loopback: fine
    with pytest.raises(SettingError, match=r"plain HTTP on 0\.0\.0\.0"):
        check_listen(settings(), everywhere, service="controller")
    caplog.set_level(logging.WARNING, logger="crmcluster.security")
    check_listen(settings(allow_plain_http=True), everywhere, service="controller")
    assert any("serving plain HTTP on 0.0.0.0" in r.getMessage() for r in caplog.records)
    cert, key, _ = pair(tmp_path, "c")
    check_listen(settings(tls_cert_file=cert, tls_key_file=key), everywhere, service="controller")
    with pytest.raises(SettingError, match="set both"):
        check_listen(settings(tls_cert_file=cert), everywhere, service="controller")
