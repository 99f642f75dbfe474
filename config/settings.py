"""Process settings, one class per service, read from ``CRMCLUSTER_*`` variables or a ``.env`` file.

Build them with :func:`load_settings`, which turns pydantic's validation errors into one
:class:`~config.errors.SettingError` line naming the variable, so a process stops at start with
``CRMCLUSTER_ADMIN_TOKEN: required, not set`` rather than a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.crm_schema import CrmNames
from config.errors import SettingError
from config.windows_paths import BadPath, unc_share

ENV_PREFIX = "CRMCLUSTER_"
_PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "token", "admin", "test", "xxx", "none"}
_INSTALL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,29}$")
#: What ``CRMCLUSTER_SANDBOX_LACKS`` can take away from the sandbox's server: the IIS role
#: services ASP, ISAPI Extensions and ISAPI Filters, ASP's parent paths, SQL Server's TCP/IP, a
#: case-insensitive collation (it gets Latin1_General_CS_AS), memory (it gets 4 GB, SQL Server's
#: machine too) and free disk (it gets 100 MB).
SANDBOX_LACKS = (
    "asp",
    "isapi_extensions",
    "isapi_filters",
    "parent_paths",
    "tcp_ip",
    "collation",
    "memory",
    "free_disk",
)


def _check_token(value: SecretStr | None, *, what: str) -> SecretStr | None:
    if value is None:
        return None
    raw = value.get_secret_value()
    if raw.strip().lower() in _PLACEHOLDERS or len(raw) < 16:
        raise ValueError(f"{what} must be a real secret of 16 characters or more, not a placeholder")
    if any(c.isspace() for c in raw):
        raise ValueError(f"{what} must not contain white space")
    return value


def _check_shares(value: list[str]) -> list[str]:
    out = []
    for share in value:
        try:
            server, name = unc_share(share)
        except BadPath as exc:
            raise ValueError(f"{share!r}: {exc}") from None
        out.append(f"\\\\{server}\\{name}")
    return out


class CommonSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Path("crmcluster-data")
    crm_db_url: str | None = None
    state_db_url: str | None = None
    install_name: str = "CRM"
    crm_timezone: str = "UTC"
    secret_key: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``auto``: JSON lines unless stderr is a terminal; ``json`` or ``text`` to choose (config.logs).
    log_format: Literal["auto", "json", "text"] = "auto"

    # Custom_SysParams row names: Sage does not publish them, so they are settings.
    sysparam_server_names: str = "ServerNames"
    sysparam_do_load_balancing: str = "DoLoadBalancing"
    sysparam_dtls_server_name: str = "DTLSServerName"
    sysparam_fq_server_names: str = "FQServerNames"
    sysparam_http_port: str = "HTTPPort"
    sysparam_outlook_port: str = "OutlookPort"
    sysparam_doc_store: str = "DocStore"
    sysparam_doc_templates: str = "DocTemplates"
    #: Whether users reach the web servers over HTTPS. Sage publishes no Custom_SysParams row for
    #: the install wizard's "Use HTTPS" (the guide only says to update HTTPPort and OutlookPort),
    #: so crmcluster keeps the choice in a row of its own, named so nobody takes it for Sage's.
    sysparam_use_https: str = "crmcluster_UseHTTPS"

    crm_names: CrmNames = Field(default_factory=CrmNames)
    #: A user is logged on while their Activity row is open and younger than this.
    session_timeout_minutes: int = Field(60, ge=1, le=24 * 60)

    # Limits every request meets before a route parses it (config/request_guard.py) ---------------
    #: Largest request body read; a larger one is answered 413 and the rest is never read.
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: Failed authentications from one address within ``auth_failure_window`` seconds before it is
    #: refused (429 with Retry-After) for ``auth_block_seconds``.
    auth_max_failures: int = Field(10, ge=1, le=10_000)
    auth_failure_window: float = Field(60.0, gt=0, le=24 * 3600)
    auth_block_seconds: float = Field(60.0, gt=0, le=24 * 3600)

    # TLS (config/tls.py) --------------------------------------------------------------------------
    #: The service serves HTTPS with this certificate (PEM) and key; ``crmcluster tls new-cert``
    #: makes a self-signed pair and prints its fingerprint.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Plain HTTP on an address other machines reach (behind a TLS proxy): a warning at every
    #: start. Off: such a service refuses to start without a certificate.
    allow_plain_http: bool = False

    @field_validator("install_name")
    @classmethod
    def _install_name(cls, v: str) -> str:
        if not _INSTALL_NAME.match(v):
            raise ValueError("must start with a letter and hold only letters, digits and _ (30 at most)")
        return v

    @field_validator("crm_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("secret_key")
    @classmethod
    def _fernet(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return None
        try:
            Fernet(v.get_secret_value().encode())
        except (ValueError, TypeError) as exc:
            raise ValueError("must be a Fernet key (32 url-safe base64-encoded bytes)") from exc
        return v

    @field_validator(
        "sysparam_server_names",
        "sysparam_do_load_balancing",
        "sysparam_dtls_server_name",
        "sysparam_fq_server_names",
        "sysparam_http_port",
        "sysparam_outlook_port",
        "sysparam_doc_store",
        "sysparam_doc_templates",
        "sysparam_use_https",
    )
    @classmethod
    def _row_name(cls, v: str) -> str:
        if not v or len(v) > 100 or not v.isprintable():
            raise ValueError("must be 1 to 100 printable characters")
        return v

    # Derived values ------------------------------------------------------------------------------
    @property
    def embedded_crm_url(self) -> str:
        """The embedded stand-in for Sage CRM's database (demo and sandbox)."""
        return f"sqlite+aiosqlite:///{(self.data_dir / 'crm.db').resolve()}"

    @property
    def embedded_state_url(self) -> str:
        """crmcluster's own tables. A file apart from the CRM database on purpose: restoring the CRM
        database (the guide's "Restoring a Live Environment") must never roll back the controller's
        own record of the upgrade that is restoring it."""
        return f"sqlite+aiosqlite:///{(self.data_dir / 'state.db').resolve()}"

    @property
    def crm_url(self) -> str:
        return self.crm_db_url or self.embedded_crm_url

    @property
    def state_url(self) -> str:
        return self.state_db_url or self.embedded_state_url

    @property
    def url_path_install(self) -> str:
        """The install name as it appears in URLs: lower-cased, as Sage does (``/crm/``)."""
        return self.install_name.lower()

    def sysparam_row_names(self) -> dict[str, str]:
        """JSON field name → Custom_SysParams row name."""
        return {
            "server_names": self.sysparam_server_names,
            "do_load_balancing": self.sysparam_do_load_balancing,
            "dtls_server_name": self.sysparam_dtls_server_name,
            "fq_server_names": self.sysparam_fq_server_names,
            "http_port": self.sysparam_http_port,
            "outlook_port": self.sysparam_outlook_port,
            "doc_store": self.sysparam_doc_store,
            "doc_templates": self.sysparam_doc_templates,
            "use_https": self.sysparam_use_https,
        }


class ControllerSettings(CommonSettings):
    """The controller. There is no shared agent token: each node's is issued at registration
    (controller/access/node_tokens.py); an old ``CRMCLUSTER_AGENT_TOKEN`` is ignored."""

    admin_token: SecretStr
    #: Optional second token for the dashboard's operators (drain/undrain, pause/resume only).
    operator_token: SecretStr | None = None
    heartbeat_timeout: float = Field(15.0, gt=0, le=3600)
    #: Seconds an agent operation may run before the controller fails the step.
    step_timeout: float = Field(900.0, gt=0)
    #: Used for the capacity check when the database cannot tell its maximum connections.
    max_connections: int = Field(100, ge=1)
    tomcat_pool_size: int = Field(10, ge=1, le=1000)
    supported_upgrades: dict[str, list[str]] = Field(
        default_factory=lambda: {"7.2": ["2017 R1"], "7.3": ["2017 R1"]}
    )
    balancer_url: str | None = None
    #: Seconds the controller leader lease lasts (renewed every third of it); only the leader
    #: runs upgrades. A controller restarted with the same ``controller_id`` takes it back at once.
    upgrade_lease_ttl: float = Field(10.0, gt=0, le=3600)
    #: This controller's name in the leader lease (default: host name and process id).
    controller_id: str | None = Field(None, min_length=1, max_length=200)
    #: Shortest wait between two looks at a running agent operation (it grows with the step's age).
    upgrade_poll_interval: float = Field(0.05, gt=0, le=60)
    #: Per-node Tomcat pool sizes that differ from ``tomcat_pool_size`` (``{"crm2": 20}``).
    tomcat_pool_sizes: dict[str, int] = Field(default_factory=dict)
    #: Seconds a short agent operation (stop/start, probe, reload, install service …) may run.
    operation_timeout: float = Field(120.0, gt=0, le=3600)
    #: Seconds an HTTP request to an agent may take.
    agent_request_timeout: float = Field(10.0, gt=0, le=300)
    #: Seconds a cluster change (join, services, library, metadata …) keeps asking an agent that
    #: does not answer — a network blip, an agent restarting — before its step fails.
    agent_unreachable_grace: float = Field(15.0, gt=0, le=3600)
    #: Seconds a drain waits for logged-on users to reach zero before it completes anyway.
    drain_timeout: float = Field(600.0, ge=0, le=7 * 24 * 3600)
    #: Seconds between passes of the heartbeat watch (down detection, logged-on counts).
    sweep_interval: float = Field(1.0, gt=0, le=60)
    #: Seconds of lateness of the controller's own loop or state database past which it counts as
    #: behind: no server goes down for silence until a whole heartbeat time-out later (default: a
    #: third of ``heartbeat_timeout``).
    liveness_lag_limit: float | None = Field(None, gt=0, le=3600)
    #: Share of the cluster above which servers falling silent at once (two or more) are a storm:
    #: held back and reported (``down_storm_held``) rather than marked down.
    down_storm_share: float = Field(0.55, gt=0, le=1)
    #: Seconds between two reads of the maintenance plan's jobs from msdb (dashboard, metrics).
    maintenance_poll_interval: float = Field(60.0, gt=0, le=24 * 3600)
    #: Seconds a maintenance task started now may run (a full backup of a large database is long).
    maintenance_run_timeout: float = Field(6 * 3600.0, gt=0, le=7 * 24 * 3600)
    #: Agents may be registered at link-local addresses (169.254.x.x, fe80::) and cloud metadata
    #: addresses. Off: the controller never sends a token or a license key there.
    allow_link_local_agents: bool = False
    #: The CA that issued the agents' certificates (PEM). Unset: each https agent's certificate is
    #: pinned when it is registered (checked against the fingerprint given, if one is).
    agent_ca_file: Path | None = None
    #: The file shares (``\\server\share``) the library (DocStore, DocTemplates) may be on. Empty:
    #: the share the library is on now (any share that is not an administrative one, before the
    #: first is set).
    library_shares: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("admin_token", "operator_token")
    @classmethod
    def _tokens(cls, v: SecretStr | None) -> SecretStr | None:
        return _check_token(v, what="token")

    @field_validator("library_shares")
    @classmethod
    def _shares(cls, v: list[str]) -> list[str]:
        return _check_shares(v)

    @model_validator(mode="after")
    def _needs_key(self) -> ControllerSettings:
        if self.secret_key is None:
            raise ValueError(
                "CRMCLUSTER_SECRET_KEY: required by the controller to keep license keys encrypted"
            )
        return self


class AgentSettings(CommonSettings):
    """The node agent (docs/agent.md lists every setting with its meaning)."""

    agent_token: SecretStr
    controller_url: str | None = None
    name: str | None = None
    driver: Literal["windows", "sandbox"] = "sandbox"
    heartbeat_interval: float = Field(5.0, gt=0, le=600)
    #: Longest wait between heartbeats while the controller does not answer (back-off cap).
    heartbeat_max_backoff: float = Field(60.0, gt=0, le=3600)
    #: Where the agent listens when it runs as a Windows service (``crmcluster agent`` takes
    #: ``--host``/``--port`` instead); the firewall rule admits only the controller's address.
    listen_host: str = "0.0.0.0"  # noqa: S104
    listen_port: int = Field(8701, ge=1, le=65535)
    #: How the agent verifies an https controller: the CA that issued its certificate (PEM), or
    #: the certificate's SHA-256 fingerprint (``crmcluster tls new-cert`` printed it). Neither:
    #: the system's trusted CAs.
    controller_ca_file: Path | None = None
    controller_fingerprint: str | None = None
    #: The URL the agent advertises in heartbeats (``http://127.0.0.1:8701``).
    agent_url: str | None = None
    #: Where backups go; relative ``destination``/``source`` params resolve under it.
    #: Default: ``<data dir>/backups`` (sandbox) or ``D:\CRMBackups`` (windows; set it).
    backup_root: str | None = None
    #: Seconds between looks at the IIS start time (an IIS reset or app-pool recycle
    #: triggers a warm-up logon).
    iis_watch_interval: float = Field(2.0, gt=0, le=600)
    #: The user the warm-up logon signs in as, and its password (windows: required for warm-up).
    warmup_user: str = Field("Admin", min_length=1, max_length=100)
    warmup_password: SecretStr | None = None
    #: Finished operations older than this are dropped from the journal at start.
    journal_keep_days: int = Field(30, ge=1, le=3650)
    #: File shares ``probe_library`` may probe besides those of DocStore/DocTemplates.
    library_shares: list[str] = Field(default_factory=list, max_length=20)

    # HAProxy's agent-check (node_agent.agent_check) ---------------------------------------------
    #: The TCP port HAProxy's ``agent-check agent-port`` asks; None (default): no listener;
    #: 0: a free port (tests).
    agent_check_port: int | None = Field(None, ge=0, le=65535)
    agent_check_host: str = Field("0.0.0.0", min_length=1, max_length=255)  # noqa: S104 - HAProxy asks from another host
    #: Seconds over which the weight the agent answers ramps up after the server comes back.
    agent_check_slow_start: float = Field(30.0, ge=0, le=3600)
    #: Seconds between looks at the state the controller holds for this node (agent-check on).
    state_poll_interval: float = Field(1.0, gt=0, le=60)

    # Sandbox driver -----------------------------------------------------------------------------
    sandbox_version: Literal["7.2", "7.3"] = "7.3"
    sandbox_roles: str = ""
    sandbox_web_port: int = Field(0, ge=0, le=65535)
    sandbox_library_root: Path | None = None
    sandbox_faults: str = ""
    #: A node's database sessions count only while it refreshed them within this many seconds.
    sandbox_session_ttl: float = Field(30.0, gt=0, le=3600)
    #: The sandbox's SQL Server Agent (on the database server's node): seconds between its looks
    #: at the maintenance jobs' schedules; the recovery model it gives the CRM database; tasks of
    #: the maintenance plan that fail (comma-separated, e.g. ``consistency_check``).
    sandbox_sql_agent_interval: float = Field(30.0, gt=0, le=3600)
    sandbox_recovery_model: Literal["FULL", "SIMPLE", "BULK_LOGGED"] = "FULL"
    sandbox_maintenance_faults: str = ""
    #: What the sandbox's server lacks of the guide's prerequisites (comma-separated, see
    #: :data:`SANDBOX_LACKS`): it plays a server without them and ``check_prerequisites`` says so.
    sandbox_lacks: str = ""
    #: Other websites on the sandbox's IIS besides the CRM's (comma-separated names): stopping
    #: IIS takes them down too.
    sandbox_other_sites: str = ""
    #: The port of the sandbox IIS's HTTPS binding on the CRM website (0: none, as after a plain
    #: install). It is played: ``check_https_binding`` finds it, no TLS is served.
    sandbox_https_port: int = Field(0, ge=0, le=65535)
    #: ``response_file``: the sandbox's setup replays the recorded response file (as the windows
    #: driver does); ``manual``: ``run_installer`` waits for a person to run the wizard by hand
    #: and confirm (``SandboxDriver.run_wizard_by_hand`` plays the person), then is verified.
    sandbox_installer: Literal["response_file", "manual"] = "response_file"

    # Windows driver -----------------------------------------------------------------------------
    #: Run nothing: record every command the windows driver would run, against a modelled server.
    dry_run: bool = False
    #: On a real server, run only what changes nothing (``sc query``, ``reg query``, ``appcmd
    #: list``, ``SELECT``): what the preflight needs. Any other step fails, naming its command.
    read_only: bool = False
    #: The Sage CRM version the dry run's modelled server starts at.
    dry_run_version: Literal["7.2", "7.3", "2017 R1"] = "7.3"
    windows_programs_root: str = r"C:\Program Files (x86)\Sage\CRM"
    #: ``%SystemRoot%``: regsvr32 is ``%SystemRoot%\SysWOW64\regsvr32.exe`` (eware.dll is 32-bit).
    windows_system_root: str = r"C:\Windows"
    windows_site: str = "Default Web Site"
    #: The application pool of the CRM application; empty: read from IIS (``appcmd list app``).
    windows_app_pool: str = ""
    #: Where this server's own CRM logon page answers (the warm-up logon goes there).
    windows_web_url: str = "http://localhost"
    windows_appcmd: str = r"C:\Windows\System32\inetsrv\appcmd.exe"
    #: Sage CRM is a 32-bit program: its keys live in the 32-bit registry view (``/reg:32``).
    windows_registry_view: Literal["32", "64"] = "32"
    #: Where SQL Server writes the ``.bak`` (a folder of the SQL Server machine, created with
    #: ``xp_create_subdir``, or a UNC share both the agent and SQL Server's account reach).
    windows_sql_backup_dir: str | None = None
    #: Seconds a BACKUP, VERIFYONLY or RESTORE may run (pyodbc's query time-out).
    windows_sql_long_timeout: int = Field(4 * 3600, ge=60, le=48 * 3600)
    #: How the program files backup is put back: ``rename`` (CRM -> CRM_failed, the backup copied
    #: to CRM: Tomcat, the services and the registry keep valid paths) or ``redirect`` (the guide's
    #: CRM_backup folder and website redirect, with its isapiCgiRestriction entry).
    windows_restore_by: Literal["rename", "redirect"] = "rename"
    #: The Tomcat service (``{install}`` is the install name): the guide's ``<install>Tomcat7``.
    windows_tomcat_service: str = "{install}Tomcat7"
    #: ``response_file``: Sage's InstallShield setup replayed (``/s /f1 /f2``) from a response file
    #: recorded by the administrator; ``manual``: the step waits for a person to run the wizard.
    windows_installer: Literal["response_file", "manual"] = "response_file"
    windows_setup_exe: str = r"C:\CRMSetup\Setup.exe"
    #: The recorded response files: ``<mode>-<version>.iss`` (``upgrade-2017 R1.iss``).
    windows_response_files: str = r"C:\CRMSetup\responses"
    #: The account the agent's service runs as (the per-run response file is readable only by it
    #: and the Administrators group).
    windows_service_account: str = "NT AUTHORITY\\SYSTEM"
    #: Seconds the installer may run.
    windows_installer_timeout: int = Field(4 * 3600, ge=60, le=48 * 3600)
    windows_services: dict[str, str] = Field(
        default_factory=lambda: {
            "indexer": "CRMIndexerService",
            "escalation": "CRMEscalationService",
            "email_manager": "CRMEmailManagerService",
            "integration": "CRMIntegrationService",
            "quickfind": "CRMQuickFindService",
        }
    )

    @field_validator("agent_token")
    @classmethod
    def _tokens(cls, v: SecretStr | None) -> SecretStr | None:
        return _check_token(v, what="token")

    @field_validator("library_shares")
    @classmethod
    def _shares(cls, v: list[str]) -> list[str]:
        return _check_shares(v)

    @field_validator("sandbox_lacks")
    @classmethod
    def _lacks(cls, v: str) -> str:
        lacks = [r.strip() for r in v.split(",") if r.strip()]
        bad = [r for r in lacks if r not in SANDBOX_LACKS]
        if bad:
            raise ValueError(f"unknown prerequisite {bad[0]!r}; known: {', '.join(SANDBOX_LACKS)}")
        return ",".join(lacks)

    @field_validator("sandbox_roles")
    @classmethod
    def _roles(cls, v: str) -> str:
        from config.vocabulary import Role

        known = {r.value for r in Role}
        roles = [r.strip() for r in v.split(",") if r.strip()]
        bad = [r for r in roles if r not in known]
        if bad:
            raise ValueError(f"unknown role {bad[0]!r}; known: {', '.join(sorted(known))}")
        return ",".join(roles)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$", v):
            raise ValueError("must be a server name: letters, digits, - and _ (63 at most)")
        return v

    @field_validator("controller_fingerprint")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        from config.tls import normal_fingerprint

        return normal_fingerprint(v) if v else None

    @model_validator(mode="after")
    def _one_mode(self) -> AgentSettings:
        if self.dry_run and self.read_only:
            raise ValueError("CRMCLUSTER_DRY_RUN and CRMCLUSTER_READ_ONLY: choose one")
        return self

    @property
    def roles(self) -> list[str]:
        return [r for r in self.sandbox_roles.split(",") if r]

    @property
    def windows_mode(self) -> Literal["live", "dry_run", "read_only"]:
        return "dry_run" if self.dry_run else "read_only" if self.read_only else "live"


class BalancerSettings(CommonSettings):
    admin_token: SecretStr | None = None
    scheme: Literal["http", "https"] = "http"
    access_log: bool = False
    health_interval: float = Field(2.0, gt=0, le=60)
    health_fall: int = Field(3, ge=1, le=100)
    health_rise: int = Field(2, ge=1, le=100)
    health_timeout: float = Field(1.0, gt=0, le=30)
    counts_interval: float = Field(0.5, gt=0, le=1.0)
    config_interval: float = Field(2.0, gt=0, le=5.0)
    states_interval: float = Field(0.5, gt=0, le=1.0)
    pending_ttl: float = Field(30.0, gt=0, le=3600)
    slow_start: float = Field(30.0, ge=0, le=3600)
    retry_after: int = Field(5, ge=1, le=3600)
    #: Largest logon form body read (to find the user for sticky logons); larger ones get 413.
    max_form_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    #: Time-out of one background database read; past it the pool is marked stale.
    db_timeout: float = Field(2.0, gt=0, le=60)
    #: ``background`` (default): counts refreshed by a loop, no database round trip per logon.
    #: ``per_logon``: re-read Activity before every decision (slower; kept to measure against).
    counts_mode: Literal["background", "per_logon"] = "background"
    #: Seconds between full reads of every open session (the sticky map); new sessions are
    #: picked up on every counts pass in between.
    sticky_refresh: float = Field(5.0, gt=0, le=300)
    #: Share pending logons with the other balancer replicas through the state database.
    share_pending: bool = True
    #: This replica's id in ``balancer_pending`` (default ``host:pid``).
    replica_id: str | None = Field(None, min_length=1, max_length=100)

    @field_validator("admin_token")
    @classmethod
    def _tokens(cls, v: SecretStr | None) -> SecretStr | None:
        return _check_token(v, what="token")


S = TypeVar("S", bound=CommonSettings)


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts or parts == ["__root__"]:
        return "settings"
    return ENV_PREFIX + "__".join(p.upper() for p in parts)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment (and ``overrides``), or raise one-line :class:`SettingError`."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "missing":
            msg = "required, not set"
        msg = msg.removeprefix("Value error, ")
        if msg.startswith(ENV_PREFIX):
            raise SettingError(msg) from None
        raise SettingError(f"{_env_name(tuple(err.get('loc', ())))}: {msg}") from None
