"""``crmcluster tls new-cert`` (a self-signed pair for a node, its fingerprint printed) and
``crmcluster tls fingerprint FILE``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

tls_app = typer.Typer(help="TLS certificates for the services (HTTPS with pinning).", no_args_is_help=True)


@tls_app.command("new-cert")
def new_cert(
    name: Annotated[str, typer.Option("--name", help="The certificate's common name (the server's name).")],
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="A host name or address it answers on (repeatable; default: --name)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for NAME.crt and NAME.key.")] = Path("."),
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days it is valid.")] = 825,
    json_: Annotated[bool, typer.Option("--json", help="Print the paths and fingerprint as JSON.")] = False,
) -> None:
    """Make a self-signed certificate and key; print the fingerprint to pin on the other side
    (``tls_fingerprint`` when registering an agent, ``CRMCLUSTER_CONTROLLER_FINGERPRINT`` on agents)."""
    from config.tls import fingerprint, new_certificate

    cert_pem, key_pem = new_certificate(name, host or [name], days=days)
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}.crt", out / f"{name}.key"
    if key_path.exists() or cert_path.exists():
        typer.echo(f"crmcluster: {cert_path} or {key_path} exists; remove it first", err=True)
        raise typer.Exit(1)
    cert_path.write_text(cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_pem)
    fp = fingerprint(cert_pem)
    if json_:
        typer.echo(json.dumps({"certificate": str(cert_path), "key": str(key_path), "fingerprint": fp}))
        return
    typer.echo(f"certificate {cert_path}\nkey         {key_path} (readable by its owner only)")
    typer.echo(f"SHA-256 fingerprint: {fp}")
    typer.echo(f"Set CRMCLUSTER_TLS_CERT_FILE={cert_path} and CRMCLUSTER_TLS_KEY_FILE={key_path} on {name}.")


@tls_app.command("fingerprint")
def show_fingerprint(file: Annotated[Path, typer.Argument(help="A PEM certificate.")]) -> None:
    """The SHA-256 fingerprint of a certificate."""
    from config.tls import fingerprint

    typer.echo(fingerprint(file.read_text()))


def register(app: typer.Typer) -> None:
    app.add_typer(tls_app, name="tls")
