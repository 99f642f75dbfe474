"""``crmcluster``: run the services, the demo, and talk to a controller.

Errors are one clear line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from config.errors import ConfigError, MigrationError
from crmcluster.services import PortInUse, serve, setup_logging

app = typer.Typer(
    name="crmcluster",
    help="Run and operate multi-server Sage CRM: controller, node agents, login balancer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"crmcluster: {message}", err=True)
    return typer.Exit(code)


@app.command()
def migrate(
    url: Annotated[str | None, typer.Option(help="State database URL (default: settings).")] = None,
) -> None:
    """Bring the state database schema up to date (services also do this at start)."""
    from config.database import make_engine
    from config.migrate import migrate as run_migrate
    from config.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)

    async def _run() -> set[str]:
        engine = make_engine(url or settings.state_url)
        try:
            return await run_migrate(engine)
        finally:
            await engine.dispose()

    revs = asyncio.run(_run())
    typer.echo("state database at " + ", ".join(sorted(revs)))


@app.command("backup-state")
def backup_state(
    to: Annotated[Path, typer.Option("--to", help="Folder of the backups.")],
    keep_days: Annotated[float, typer.Option(help="Delete backups older than this, after a good one.")] = 14,
    textfile_dir: Annotated[
        Path | None, typer.Option(help="Write the outcome for node_exporter's textfile collector here.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="State database URL (default: settings).")] = None,
) -> None:
    """Back up crmcluster's own state database (deploy/systemd/crmcluster-state-backup.timer, daily)."""
    from config.settings import CommonSettings, load_settings
    from crmcluster.state_backup import BackupFailed
    from crmcluster.state_backup import backup_state as run_backup

    settings = load_settings(CommonSettings)
    try:
        done = run_backup(url or settings.state_url, to=to, keep_days=keep_days, textfile_dir=textfile_dir)
    except BackupFailed as exc:
        raise fail(str(exc), 1) from None
    typer.echo(
        f"state database backed up to {done.path} ({done.size} bytes in {done.seconds:.1f}s); "
        f"{len(done.removed)} older backup(s) removed"
    )


@app.command()
def controller(host: HostOpt = "127.0.0.1", port: Annotated[int, typer.Option()] = 8700) -> None:
    """Run the controller (REST API, registry, upgrades, dashboard)."""
    from config.settings import ControllerSettings, load_settings
    from controller.app import create_app

    settings = load_settings(ControllerSettings)
    setup_logging(settings, service="controller")
    serve(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        settings=settings,
        service="controller",
    )


@app.command()
def balancer(host: HostOpt = "127.0.0.1", port: Annotated[int, typer.Option()] = 8080) -> None:
    """Run the login balancer."""
    from balancer.app import create_app
    from config.settings import BalancerSettings, load_settings

    settings = load_settings(BalancerSettings)
    setup_logging(settings, service="balancer")
    serve(
        create_app(settings),
        host=host,
        port=port,
        access_log=settings.access_log,
        log_level=settings.log_level,
        settings=settings,
        service="balancer",
    )


agent_app = typer.Typer(
    help="Run a node agent on a web server (or install it as a Windows service).",
    pretty_exceptions_enable=False,
)
app.add_typer(agent_app, name="agent")


@agent_app.callback(invoke_without_command=True)
def agent(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="This web server's name, as in ServerNames.")] = None,
    driver: Annotated[str | None, typer.Option(help="Host driver: windows or sandbox.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Agent state and sandbox root.")] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Run nothing: record every command against a modelled server."),
    ] = False,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Run only commands that change nothing (the preflight's).")
    ] = False,
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8701,
) -> None:
    """Run a node agent on a web server."""
    if ctx.invoked_subcommand is not None:
        return
    from config.settings import AgentSettings, load_settings
    from node_agent.app import create_app

    overrides: dict[str, object] = {}
    if name:
        overrides["name"] = name
    if driver:
        overrides["driver"] = driver
    if data_dir:
        overrides["data_dir"] = data_dir
    if dry_run:
        overrides["dry_run"] = True
    if read_only:
        overrides["read_only"] = True
    settings = load_settings(AgentSettings, **overrides)
    if not settings.name:
        raise fail("CRMCLUSTER_NAME: required (or --name), not set", 2)
    setup_logging(settings, service="agent", node=settings.name)
    serve(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        settings=settings,
        service=f"agent {settings.name}",
    )


@agent_app.command("install-service")
def install_service(
    account: Annotated[
        str | None, typer.Option(help="Run-as account (DOMAIN\\user or .\\user); default LocalSystem.")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(help="The account's password (else CRMCLUSTER_SERVICE_PASSWORD).", hidden=True),
    ] = None,
    args: Annotated[
        list[str] | None, typer.Argument(help="Agent options, e.g. --name crm1 --driver windows")
    ] = None,
) -> None:
    """Install the agent as a Windows service: automatic start, restart on failure, logs under
    %ProgramData%\\crmcluster\\logs and in the Event Log (pywin32: the windows extra of crmcluster)."""
    import os

    from crmcluster import windows_service

    if sys.platform != "win32":
        raise fail("install-service runs on Windows (the agent's service on a Sage CRM web server)", 2)
    defn = windows_service.definition(account=account)
    try:
        commands = windows_service.install(
            defn, password=password or os.environ.get("CRMCLUSTER_SERVICE_PASSWORD")
        )
    except ImportError:
        raise fail('pywin32 is missing: pip install "crmcluster[windows]"', 2) from None
    typer.echo(f"installed {defn.name} ({defn.start}, as {defn.account or 'LocalSystem'})")
    for argv in commands:
        typer.echo("  " + " ".join(argv))


@agent_app.command("uninstall-service")
def uninstall_service() -> None:
    """Stop and remove the agent's Windows service."""
    from crmcluster import windows_service

    if sys.platform != "win32":
        raise fail("uninstall-service runs on Windows", 2)
    try:
        windows_service.uninstall()
    except ImportError:
        raise fail('pywin32 is missing: pip install "crmcluster[windows]"', 2) from None
    typer.echo(f"removed {windows_service.SERVICE_NAME}")


def _register_optional() -> None:
    """Commands that live in their own modules (demo, client commands)."""
    import importlib

    for module in (
        "crmcluster.demo",
        "crmcluster.client_commands",
        "crmcluster.advise",
        "crmcluster.tls_commands",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # pragma: no cover - while the module is being built
            if exc.name != module:
                raise
            continue
        mod.register(app)


_register_optional()


def main() -> None:
    try:
        rc = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("crmcluster: aborted", err=True)
        sys.exit(130)
    except (ConfigError, MigrationError, PortInUse) as exc:
        typer.echo(f"crmcluster: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last resort: any error is one line and exit 1
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        typer.echo(f"crmcluster: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    # With standalone_mode=False, click returns a command's `typer.Exit(code)` as its value.
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
