"""Sage CRM's install wizard as a person runs it by hand (the ``manual`` installer mode): the pages
the guide walks through and the choice it gives on each, for one ``run_installer`` step.

The guide's "Installing Sage CRM on the database server" and "… on a non-database server"
("Upgrading Sage CRM" lists the same pages):

=============================== =================================================================
page                            the database server            every other server
=============================== =================================================================
setup type                      Upgrade Previous Version of CRM, the install to upgrade
license key                     the run's key (the same on every server)
database login                  server, port, SQL user, password    —
backup                          Backup Existing Copy Of The        Backup is not Required
                                Database, Program Files, And
                                Registry (and its location)
triggers                        "Disable triggers if required": what the controller says (it may
                                have disabled them itself before this step)
stop IIS                        Yes
registration                    complete the Registration page     do not register
                                (once per run: a key registers
                                at most five times)
=============================== =================================================================

Both drivers show these choices in the operation's record (``choices``) while it waits, and the
controller shows them on the step (``awaiting_operator``).
"""

from __future__ import annotations

from node_agent.protocol import RunInstallerParams

CONFIRM = "then confirm this step (POST /api/v1/upgrades/{run}/steps/{step}/confirm, with a note)"


def wizard_choices(
    params: RunInstallerParams, *, setup_exe: str, install: str, backup_folder: str | None = None
) -> list[str]:
    """The choices a person makes, page by page, to carry out ``params`` by hand."""
    out = [
        f"run {setup_exe} as an administrator, accept the Software License Agreement",
        f"choose 'Upgrade Previous Version of CRM' and the install {install}"
        if params.mode == "upgrade"
        else f"choose 'New Install' of Sage CRM {params.version} with the install name {install}",
        "enter your name, company name and the license key the run was given",
    ]
    if params.database is not None:
        out.append(
            f"confirm the database server {params.database.server}, port {params.database.port}, "
            f"SQL Server user {params.database.user}, and enter its password"
        )
    if params.mode == "upgrade":
        out.append(
            "select 'Backup Existing Copy Of The Database, Program Files, And Registry'"
            + (f" and browse to {backup_folder}" if backup_folder else "")
            if params.backup
            else "click Yes and select 'Backup is not Required'"
        )
    out.append("click Yes to stop IIS and continue the installation")
    out.append(
        "complete all fields on the Registration page"
        if params.register_install
        else "do not register this server (leave the Registration page)"
    )
    out.append(f"wait for the wizard to finish (it writes {install}\\Setup\\upgradelog.html), then Finish")
    out.append(CONFIRM)
    return out
