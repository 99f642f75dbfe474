"""The agent's wire contract, shared by the agent and the controller (DESIGN.md "Agent contract").

    GET  /v1/status                       -> NodeStatus
    POST /v1/operations                   OperationRequest -> 202 OperationRecord
    GET  /v1/operations/{op_id}           -> OperationRecord
    POST /v1/operations/{op_id}/cancel    -> OperationRecord
    controller: POST /api/v1/agents/{name}/heartbeat   Heartbeat -> NodeAssignment
    controller: GET  /api/v1/agents/{name}/state       -> NodeAssignment

Requests the controller sends carry the ids of what they serve (:data:`REQUEST_ID_HEADER`,
:data:`RUN_ID_HEADER`, :data:`OPERATION_ID_HEADER`): the agent's log lines carry them too, so one
grep follows a step across machines.

Every request carries ``Authorization: Bearer <agent token>``. The same ``op_id`` twice is the same
operation, never run twice. Params are validated per action by :func:`parse_params` (unknown
params refused); paths are *relative* to the roots the agent is configured with (see
:data:`RelPath`), library paths are UNC (:data:`UncPath`). Secrets in params (``license_key``,
``database.password``) are :class:`~pydantic.SecretStr` and never echoed in a record.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    model_validator,
)

from config.input_types import Bool, Count, Int
from config.maintenance_plan import Schedule, TaskName
from config.vocabulary import KNOWN_VERSIONS, NodeState
from config.windows_paths import BadPath, relative_path, unc_path

PROTOCOL_VERSION = 1

#: The request that caused this call (the controller's own request id, or the caller's).
REQUEST_ID_HEADER = "X-Request-ID"
#: The upgrade run a call belongs to.
RUN_ID_HEADER = "X-CRMCluster-Run-ID"
#: The operation (``op_id``) a call is about.
OPERATION_ID_HEADER = "X-CRMCluster-Operation-ID"


class Action(StrEnum):
    STOP_WEB = "stop_web"
    START_WEB = "start_web"
    STOP_TOMCAT = "stop_tomcat"
    START_TOMCAT = "start_tomcat"
    INSTALL_SERVICE = "install_service"
    UNINSTALL_SERVICE = "uninstall_service"
    START_SERVICE = "start_service"
    STOP_SERVICE = "stop_service"
    BACKUP_PROGRAM_FILES = "backup_program_files"
    BACKUP_REGISTRY = "backup_registry"
    BACKUP_DATABASE = "backup_database"
    BACKUP_VIEWS = "backup_views"
    RESTORE_PROGRAM_FILES = "restore_program_files"
    RESTORE_REGISTRY = "restore_registry"
    RESTORE_DATABASE = "restore_database"
    REGISTER_DLL = "register_dll"
    REDIRECT_WEBSITE = "redirect_website"
    RUN_INSTALLER = "run_installer"
    READ_UPGRADE_LOG = "read_upgrade_log"
    DISABLE_TRIGGERS = "disable_triggers"
    ENABLE_TRIGGERS = "enable_triggers"
    DISABLE_EXCHANGE_INTEGRATION = "disable_exchange_integration"
    ENABLE_EXCHANGE_INTEGRATION = "enable_exchange_integration"
    INSTALL_REPLICATION_ENGINE = "install_replication_engine"
    REMOVE_REPLICATION_ENGINE = "remove_replication_engine"
    RELOAD_METADATA = "reload_metadata"
    WARMUP_LOGON = "warmup_logon"
    CHECK_LICENSE = "check_license"
    PROBE_LIBRARY = "probe_library"
    FINGERPRINT_RECORDS = "fingerprint_records"
    DATABASE_SESSIONS = "database_sessions"
    #: Added to DESIGN.md's table: the preflight lists ``_dta_index_``/``_dta_stat_`` objects.
    LIST_DTA_OBJECTS = "list_dta_objects"
    #: Added to DESIGN.md's table: the guide's "Uninstalling Sage CRM manually", one action per
    #: step (never the shared database), for ``DELETE /api/v1/nodes/{name}?uninstall=true``.
    REMOVE_CRM_SERVICES = "remove_crm_services"
    UNREGISTER_DLL = "unregister_dll"
    DELETE_IIS_APPLICATION = "delete_iis_application"
    DELETE_REGISTRY_KEYS = "delete_registry_keys"
    DELETE_INSTALL_FOLDER = "delete_install_folder"
    #: Added to DESIGN.md's table: the guide's database maintenance plan, kept by SQL Server Agent
    #: (run by the database server's agent): create/update its jobs, read them back, run one now.
    APPLY_MAINTENANCE_PLAN = "apply_maintenance_plan"
    MAINTENANCE_STATUS = "maintenance_status"
    RUN_MAINTENANCE_TASK = "run_maintenance_task"
    #: Added: the SQL login's rights (VIEW SERVER STATE, BACKUP DATABASE, ALTER, CREATE ANY
    #: DATABASE; sysadmin for xp_create_subdir), for the preflight.
    CHECK_DATABASE_RIGHTS = "check_database_rights"
    #: Added: the guide's "Server software requirements" and "Database servers" as this server
    #: reads them (IIS role services, parent paths, other sites, SQL Server's TCP/IP and collation,
    #: memory, free disk), for the preflight's ``prerequisites`` and ``crmcluster audit``.
    CHECK_PREREQUISITES = "check_prerequisites"
    #: Added: whether the CRM website has an HTTPS binding on a port and it answers (the guide's
    #: "create an SSL binding for the CRM site"), before the cluster is switched to HTTPS.
    CHECK_HTTPS_BINDING = "check_https_binding"
    #: Added: the guide's "Updating the license key" (the License Key Update application): what a
    #: key gives (the installed one, or ``license_key``'s) and the update itself, which never
    #: registers the installation.
    LICENSE_DETAILS = "license_details"
    UPDATE_LICENSE_KEY = "update_license_key"


class OperationState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (OperationState.PENDING, OperationState.RUNNING)


CrmService = Literal["indexer", "escalation", "email_manager", "integration", "quickfind"]


def _relative_path(value: str) -> str:
    """A path relative to one of the agent's roots (:func:`config.windows_paths.relative_path`)."""
    try:
        return relative_path(value)
    except BadPath as exc:
        raise ValueError(str(exc)) from None


def _unc_path(value: str) -> str:
    try:
        return unc_path(value)
    except BadPath as exc:
        raise ValueError(str(exc)) from None


RelPath = Annotated[str, AfterValidator(_relative_path)]
UncPath = Annotated[str, AfterValidator(_unc_path)]
OpId = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Version = Literal["7.2", "7.3", "2017 R1"]
assert set(KNOWN_VERSIONS) == {"7.2", "7.3", "2017 R1"}


class Params(BaseModel):
    """Base of every action's params: unknown params are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    pass


class ServiceParams(Params):
    service: CrmService


class BackupParams(Params):
    destination: RelPath | None = None


class RestoreParams(Params):
    source: RelPath


class DllPathParams(Params):
    path: RelPath | None = None


class DatabaseLogin(Params):
    server: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._\\-]+$")]
    port: Int = Field(1433, ge=1, le=65535)
    user: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@\\-]+$")]
    password: SecretStr


class RunInstallerParams(Params):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    mode: Literal["upgrade", "add_node"]
    version: Version
    license_key: SecretStr
    database: DatabaseLogin | None = None
    backup: Bool = False
    backup_location: RelPath | None = None
    #: Wire name ``register`` (a pydantic attribute name, hence the alias): register the install.
    register_install: Bool = Field(False, alias="register")


class LicenseParams(Params):
    license_key: SecretStr


class LicenseDetailsParams(Params):
    """No key: the installed key's details; a key: that key's (nothing is installed)."""

    license_key: SecretStr | None = None


class LibraryParams(Params):
    path: UncPath | None = None


class FingerprintParams(Params):
    ids: list[Count] | None = Field(None, max_length=1000)


class MaintenanceJobSpec(Params):
    """One task of the maintenance plan and the SQL Server Agent schedule it runs on."""

    task: TaskName
    schedule: Schedule


class MaintenancePlanParams(Params):
    """The whole plan: jobs of tasks not listed are deleted (an empty list removes them all)."""

    jobs: list[MaintenanceJobSpec] = Field(max_length=9)
    retention_days: int = Field(28, ge=1, le=3650)

    @model_validator(mode="after")
    def _unique(self) -> MaintenancePlanParams:
        tasks = [j.task for j in self.jobs]
        if len(set(tasks)) != len(tasks):
            raise ValueError("each task once")
        return self


class HttpsBindingParams(Params):
    """The port of the SSL binding to look for (the one HTTPPort will say)."""

    port: Annotated[int, Field(ge=1, le=65535)]
    #: The name users reach this server by (its FQServerNames entry's host): an SNI binding's host.
    host: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.-]+$")] | None = None


class MaintenanceTaskParams(Params):
    task: TaskName


ACTION_PARAMS: dict[Action, type[Params]] = {
    Action.STOP_WEB: NoParams,
    Action.START_WEB: NoParams,
    Action.STOP_TOMCAT: NoParams,
    Action.START_TOMCAT: NoParams,
    Action.INSTALL_SERVICE: ServiceParams,
    Action.UNINSTALL_SERVICE: ServiceParams,
    Action.START_SERVICE: ServiceParams,
    Action.STOP_SERVICE: ServiceParams,
    Action.BACKUP_PROGRAM_FILES: BackupParams,
    Action.BACKUP_REGISTRY: BackupParams,
    Action.BACKUP_DATABASE: BackupParams,
    Action.BACKUP_VIEWS: BackupParams,
    Action.RESTORE_PROGRAM_FILES: RestoreParams,
    Action.RESTORE_REGISTRY: RestoreParams,
    Action.RESTORE_DATABASE: RestoreParams,
    Action.REGISTER_DLL: DllPathParams,
    Action.REDIRECT_WEBSITE: DllPathParams,
    Action.RUN_INSTALLER: RunInstallerParams,
    Action.READ_UPGRADE_LOG: NoParams,
    Action.DISABLE_TRIGGERS: NoParams,
    Action.ENABLE_TRIGGERS: NoParams,
    Action.DISABLE_EXCHANGE_INTEGRATION: NoParams,
    Action.ENABLE_EXCHANGE_INTEGRATION: NoParams,
    Action.INSTALL_REPLICATION_ENGINE: NoParams,
    Action.REMOVE_REPLICATION_ENGINE: NoParams,
    Action.RELOAD_METADATA: NoParams,
    Action.WARMUP_LOGON: NoParams,
    Action.CHECK_LICENSE: LicenseParams,
    Action.PROBE_LIBRARY: LibraryParams,
    Action.FINGERPRINT_RECORDS: FingerprintParams,
    Action.DATABASE_SESSIONS: NoParams,
    Action.LIST_DTA_OBJECTS: NoParams,
    Action.REMOVE_CRM_SERVICES: NoParams,
    Action.UNREGISTER_DLL: DllPathParams,
    Action.DELETE_IIS_APPLICATION: NoParams,
    Action.DELETE_REGISTRY_KEYS: NoParams,
    Action.DELETE_INSTALL_FOLDER: NoParams,
    Action.APPLY_MAINTENANCE_PLAN: MaintenancePlanParams,
    Action.MAINTENANCE_STATUS: NoParams,
    Action.RUN_MAINTENANCE_TASK: MaintenanceTaskParams,
    Action.CHECK_DATABASE_RIGHTS: NoParams,
    Action.CHECK_PREREQUISITES: NoParams,
    Action.CHECK_HTTPS_BINDING: HttpsBindingParams,
    Action.LICENSE_DETAILS: LicenseDetailsParams,
    Action.UPDATE_LICENSE_KEY: LicenseParams,
}
assert set(ACTION_PARAMS) == set(Action)

#: The guide's "Uninstalling Sage CRM manually", in its order: CRM services and the Tomcat service
#: (1), eware.dll (2), the IIS application (3), the install's Config and Mappings keys (5-6), the
#: install folder with IIS stopped (7). Step 4 deletes the CRM database: in a cluster it is shared,
#: so no action does it. Step 8, the reboot, is left to the administrator.
UNINSTALL_ACTIONS: tuple[Action, ...] = (
    Action.REMOVE_CRM_SERVICES,
    Action.UNREGISTER_DLL,
    Action.DELETE_IIS_APPLICATION,
    Action.DELETE_REGISTRY_KEYS,
    Action.DELETE_INSTALL_FOLDER,
)


class ParamsError(ValueError):
    """Params that do not fit the action; ``details`` lists each problem (``loc``, ``msg``)."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def parse_params(action: str, params: dict[str, Any] | None) -> Params:
    """Validate ``params`` for ``action``; raise :class:`ParamsError` naming what is wrong."""
    try:
        act = Action(action)
    except ValueError:
        raise ParamsError(
            f"unknown action {action!r}", [{"loc": ["action"], "msg": "unknown action"}]
        ) from None
    try:
        return ACTION_PARAMS[act].model_validate(params or {})
    except ValidationError as exc:
        details = [
            {"loc": ["params", *[str(p) for p in e["loc"]]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = details[0]
        where = ".".join(first["loc"][1:]) or "params"
        raise ParamsError(f"{act.value}: {where}: {first['msg']}", details) from None


def params_for_wire(params: Params) -> dict[str, Any]:
    """Params as JSON to send to an agent, secrets revealed (the wire is authenticated)."""

    def reveal(v: Any) -> Any:
        if isinstance(v, SecretStr):
            return v.get_secret_value()
        if isinstance(v, dict):
            return {k: reveal(x) for k, x in v.items()}
        if isinstance(v, list):
            return [reveal(x) for x in v]
        return v

    return dict(reveal(params.model_dump(mode="python", exclude_none=True, by_alias=True)))


class ServiceStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    NOT_INSTALLED = "not_installed"
    UNKNOWN = "unknown"


# Results -----------------------------------------------------------------------------------------------
class Result(BaseModel):
    """Base of every action's result: what the agent records and the controller reads.

    Fields the model does not name are refused, so a driver cannot report something no reader
    knows of, and a reader cannot look for something no driver sends. ``commands`` lists, in a
    dry run, the commands as they would have run (secrets as ``***``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    commands: list[str] | None = None


class WebResult(Result):
    """``stop_web``/``start_web``: IIS's state after the action."""

    web: ServiceStatus
    iis_started_at: datetime | None = None


class ServiceResult(Result):
    """Tomcat and the CRM services (``stop_tomcat`` … ``uninstall_service``): the Windows service
    name and its state after the action; ``installed``/``removed`` say whether this action created
    or deleted it (False: it already was, or was not, there)."""

    service: str
    state: ServiceStatus
    installed: bool | None = None
    removed: bool | None = None


class BackupResult(Result):
    """Every ``backup_*`` action: where the backup is (``path``, relative to the backup root: what
    the matching restore takes as ``source``), its size and checksum, and when it was finished.

    ``sha256`` is the content's hash as the agent read it back; where the agent cannot read the
    file (SQL Server writes the database backup), ``verified`` says it was checked another way
    (``RESTORE VERIFYONLY``) and ``sha256`` may be absent.
    """

    path: str
    size: int = Field(alias="bytes", ge=0)
    sha256: str | None = None
    verified: bool = True
    finished_at: datetime
    #: Files in the backup (folder backups).
    files: int | None = None
    #: The install's version (program files) or the CRM schema's (database) when it was taken.
    version: str | None = None
    schema_version: str | None = None
    #: Database backups: the engine, the backup file's name, the schema dumped, SQL Server's path.
    backend: str | None = None
    file: str | None = None
    schema_name: str | None = Field(None, alias="schema")
    disk: str | None = None
    database: str | None = None
    #: Registry backups: the ``.reg`` files exported. Views backups: the views saved.
    exports: list[str] | None = None
    views: list[str] | None = None
    #: Windows program files backups: the folders copied (the install, the shared ``Services``).
    folders: list[str] | None = None
    #: SQL Server backups, read back from ``msdb.dbo.backupset``: the backup set's identity
    #: (``backup_set_uuid:…``), page checksums present (``WITH CHECKSUM``), ``COPY_ONLY``.
    checksum: str | None = None
    has_backup_checksums: bool | None = None
    copy_only: bool | None = None


class ProgramFilesRestoreResult(Result):
    """``restore_program_files``: the guide's ``<install>_backup`` folder (relative to the Sage CRM
    programs root) the backup was copied into, and the website's physical path now pointing there."""

    path: str
    website_path: str
    version: str | None = None
    #: Windows, restored by renaming: what the failed install was renamed to (``CRM_failed``),
    #: and the shared ``Services`` folder's; the restored files' count and size.
    failed_copy: str | None = None
    services_failed_copy: str | None = None
    files: int | None = None
    size: int | None = Field(None, alias="bytes", ge=0)
    #: Restored into ``<install>_backup`` (the guide's redirect): the Tomcat service's own
    #: ``webapps`` folder put back too (Tomcat does not follow the website), and what it serves now.
    tomcat_webapps: str | None = None
    tomcat_version: str | None = None
    #: The shared ``Services`` folder put back, and the services' programs' versions after it.
    services_folder: str | None = None
    service_versions: dict[str, str] | None = None


class RegistryRestoreResult(Result):
    """``restore_registry``: the ``.reg`` files imported, and the keys they wrote when known."""

    imported: list[str]
    keys: list[str] = Field(default_factory=list)


class DatabaseRestoreResult(Result):
    """``restore_database``: the backup put back (``restored_from``, a backup's ``path``)."""

    restored_from: str
    schema_version: str | None = None
    backend: str | None = None
    file: str | None = None
    size: int | None = Field(None, alias="bytes", ge=0)
    sha256: str | None = None
    schema_name: str | None = Field(None, alias="schema")
    disk: str | None = None
    database: str | None = None
    #: When the backup put back was finished (msdb's ``backup_finish_date``).
    backup_finished_at: datetime | None = None


class RegisterDllResult(Result):
    registered: str


class RedirectResult(Result):
    website_path: str
    version: str | None = None


class WizardBackup(Result):
    """The install wizard's own "Backup existing copy" (backup paths, as ``BackupResult.path``)."""

    program_files: str
    registry: str
    database: str | None = None


class InstallerResult(Result):
    """``run_installer``: the version installed afterwards and what the wizard did."""

    mode: Literal["upgrade", "add_node"]
    version: str | None
    license_hash: str | None = None
    backup: WizardBackup | None = None
    registered: bool = False
    # upgrade
    from_version: str | None = None
    to_version: str | None = None
    upgraded: bool | None = None
    database_upgraded: bool | None = None
    scripts: list[str] | None = None
    # add_node
    installed: bool | None = None
    reinstalled: bool | None = None
    replication_engine: bool | None = None
    # Windows (InstallShield): how it ran, when it started, the setup log's ResultCode (0:
    # success), Setup.exe's exit code (not its outcome), when the upgrade log was written.
    installer: Literal["response_file", "manual"] | None = None
    started_at: datetime | None = None
    result_code: int | None = None
    setup_log: str | None = None
    exit_code: int | None = None
    upgrade_log_at: datetime | None = None
    operator_note: str | None = None


class ScriptOutcome(Result):
    name: str
    success: bool
    message: str = ""


class UpgradeLogResult(Result):
    """``read_upgrade_log`` (the guide's "Reviewing the upgrade log"): each script's outcome, the
    failed ones, every "NB must be fixed" line, every asterisk-marked log file."""

    ok: bool
    completed: bool
    from_version: str | None = None
    to_version: str | None = None
    scripts: list[ScriptOutcome]
    failed_scripts: list[str] = Field(default_factory=list)
    must_fix: list[str] = Field(default_factory=list)
    error_files: list[str] = Field(default_factory=list)
    #: Each script's own log (CRM script logs, SQL script logs, the ``*`` error files): file name ->
    #: its text, cut to a few thousand characters.
    script_logs: dict[str, str] = Field(default_factory=dict)
    #: When the log was written (Windows: refused when older than the last installer run).
    written_at: datetime | None = None


class TriggersResult(Result):
    """``disable_triggers``/``enable_triggers``: the state now, and the triggers this action
    changed (``schema.table.trigger``) where the driver knows them one by one."""

    triggers: Literal["enabled", "disabled"]
    changed: list[str] = Field(default_factory=list)


class ExchangeIntegrationResult(Result):
    exchange_integration: bool


class ReplicationEngineResult(Result):
    """``install_replication_engine``/``remove_replication_engine``: present afterwards or not;
    ``installed``/``removed`` say whether this action put it there or took it away."""

    replication_engine: bool
    installed: bool | None = None
    removed: bool | None = None


class MetadataResult(Result):
    reloaded_at: datetime
    #: Windows: the application pool recycled, as IIS names it (``appcmd list app``).
    app_pool: str | None = None
    #: The CRM schema's fingerprint as the reload saw it, where the driver computes one.
    schema_hash: str | None = Field(None, alias="schema")


class WarmupResult(Result):
    """``warmup_logon``: the logon form answered (``status``) and the session it opened closed."""

    logged_on: bool
    status: int
    sid: str | None = None
    logged_off: int = 0
    user: str | None = None


class LicenseCheckResult(Result):
    """``check_license``: whether the key was accepted, and what was checked to say so.

    ``checked`` names the check (``"format only"``: the key's form, no call to Sage);
    ``valid_for`` lists the versions the check confirmed the key is valid for, None when the check
    cannot tell (a format check cannot). Only a hash of the key is ever reported.
    """

    valid: bool
    checked: str
    valid_for: list[Version] | None = None
    key_hash: str
    message: str | None = None


class LibraryProbeResult(Result):
    """``probe_library``: whether the share answered and a probe file could be written, read back
    and deleted; ``message`` says what went wrong when either is False."""

    path: str
    reachable: bool
    writable: bool
    message: str | None = None


class FingerprintResult(Result):
    """``fingerprint_records``: the sample's record hashes by company id (None: not found), the
    ids not found, and the CRM schema's fingerprint and version."""

    records: dict[str, str | None]
    missing: list[int] = Field(default_factory=list)
    schema_hash: str | None = Field(None, alias="schema")
    schema_version: str | None = None


class DatabaseSessionsResult(Result):
    """``database_sessions``: sessions on the CRM database, by client host and by program."""

    hosts: dict[str, int]
    programs: dict[str, dict[str, int]] = Field(default_factory=dict)
    total: int
    #: Locks held on the CRM database, by client host (SQL Server: ``sys.dm_tran_locks``).
    locks: dict[str, int] = Field(default_factory=dict)


class DatabaseRightsResult(Result):
    """``check_database_rights``: the SQL login and the rights the upgrade needs of it
    (``HAS_PERMS_BY_NAME``, ``IS_SRVROLEMEMBER``); ``missing`` names what it lacks."""

    login: str | None = None
    view_server_state: bool
    backup_database: bool
    alter_database: bool
    create_any_database: bool
    sysadmin: bool
    missing: list[str]
    ok: bool


class DtaObject(Result):
    schema_name: str | None = Field(None, alias="schema")
    table: str
    name: str
    kind: Literal["index", "statistics"]


class DtaObjectsResult(Result):
    """``list_dta_objects``: the Database Tuning Advisor's ``_dta_index_``/``_dta_stat_`` objects."""

    objects: list[DtaObject]
    count: int


class CrmServicesRemovedResult(Result):
    """``remove_crm_services`` (the manual uninstall's step 1): the CRM services removed, and the
    Tomcat service (its name, whether this action removed it)."""

    services_removed: list[str]
    tomcat_service: str
    tomcat_removed: bool


class UnregisterDllResult(Result):
    """``unregister_dll``: the eware.dll unregistered (None: none was), and whether it was."""

    unregistered: str | None
    was_registered: bool


class IisApplicationResult(Result):
    """``delete_iis_application``: the IIS application (``site/install``), deleted or absent."""

    application: str
    deleted: bool


class RegistryKeysResult(Result):
    """``delete_registry_keys``: the install's Config and Mappings keys deleted, or already absent."""

    deleted: list[str]
    absent: list[str]


class InstallFolderResult(Result):
    """``delete_install_folder``: what was deleted, IIS's state after (when known), the reboot
    the guide's step 8 recommends."""

    deleted: list[str]
    web: ServiceStatus | None = None
    reboot: str


JobOutcome = Literal["succeeded", "failed", "retry", "cancelled", "running"]


class RestorePoint(Result):
    """A database backup SQL Server recorded (msdb ``backupset``): what a restore could start from."""

    kind: Literal["full", "differential", "log"]
    started_at: datetime | None = None
    finished_at: datetime
    size_bytes: int | None = None
    path: str


class MaintenanceRun(Result):
    """One run of a maintenance job (msdb ``sysjobhistory``, the job outcome row); also the result
    of ``run_maintenance_task``."""

    task: TaskName
    job_name: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: JobOutcome
    message: str = ""
    duration_s: float | None = None


class MaintenanceJobState(Result):
    """A maintenance job as SQL Server Agent holds it: its schedule, last run and next run."""

    task: TaskName
    job_name: str
    enabled: bool
    schedule: Schedule | None = None
    last_run: MaintenanceRun | None = None
    next_run_at: datetime | None = None
    running: bool = False


class MaintenanceStatus(Result):
    """The result of ``maintenance_status``: the plan's jobs, the database, its restore points."""

    database: str
    recovery_model: str | None = None
    #: Whether SQL Server Agent runs (None: could not be read).
    agent_running: bool | None = None
    jobs: list[MaintenanceJobState] = Field(default_factory=list)
    restore_points: list[RestorePoint] = Field(default_factory=list)


class MaintenancePlanResult(Result):
    """``apply_maintenance_plan``: the SQL Server Agent jobs created, updated (history kept), deleted."""

    created: list[str]
    updated: list[str]
    deleted: list[str]
    database: str
    #: Where the plan's backups go (the Windows driver: on the database server's disk).
    folder: str | None = None


#: The IIS role services the guide asks for, by their ``Get-WindowsFeature`` names (``dism``:
#: IIS-ASP, IIS-ISAPIExtensions, IIS-ISAPIFilter).
IIS_ROLE_SERVICES = ("Web-ASP", "Web-ISAPI-Ext", "Web-ISAPI-Filter")
#: The readings of ``check_prerequisites``, each with the command that read it (``sources``).
PREREQUISITE_READINGS = (
    "role_services",
    "parent_paths",
    "sites",
    "sql_tcp_enabled",
    "collation",
    "memory",
    "sql_memory",
    "free_disk",
)


class PrerequisitesResult(Result):
    """``check_prerequisites``: what this server has of the guide's requirements, read (never
    judged: the controller judges them against the guide's rules). ``None``: not read here (the
    SQL Server readings are the database server's) or not readable (``errors`` says why).
    ``sources`` names, per reading, the command, query or registry value that read it."""

    #: Each of :data:`IIS_ROLE_SERVICES`: installed or not.
    role_services: dict[str, bool] | None = None
    #: ASP's ``enableParentPaths`` on the CRM application.
    parent_paths: bool | None = None
    #: The IIS website the CRM application lives in, and every website on this IIS.
    crm_site: str
    sites: list[str] | None = None
    #: SQL Server's TCP/IP protocol (``SuperSocketNetLib\Tcp`` ``Enabled``).
    sql_tcp_enabled: bool | None = None
    #: SQL Server's and the CRM database's collations.
    server_collation: str | None = None
    database_collation: str | None = None
    #: This machine's memory; the SQL Server machine's memory and the CRM database's size.
    memory_bytes: int | None = None
    sql_memory_bytes: int | None = None
    database_bytes: int | None = None
    free_disk_bytes: int | None = None
    #: The database server's readings were taken here (this server holds the database role).
    database_server: bool = False
    sources: dict[str, str] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)


class LicenseDetails(Result):
    """``license_details``: what a license key gives, as far as this server can tell — its number
    of users and its features (Sage's "Max Number Of Users" and "Options"). ``users``/``features``
    None: not readable here (``checked`` says why). Only a hash and a hint of the key are reported."""

    key_hash: str | None = None
    #: The key's last four characters (``…0001``).
    key_hint: str | None = None
    users: int | None = None
    features: list[str] | None = None
    checked: str


class LicenseUpdateResult(Result):
    """``update_license_key``: the installed key's details before and after, and how it was
    updated. ``registered`` is always false: updating a key registers nothing."""

    before: LicenseDetails
    after: LicenseDetails
    how: str
    registered: Literal[False] = False
    operator_note: str | None = None


class HttpsBindingResult(Result):
    """``check_https_binding``: the CRM website's bindings, whether one is ``https`` on the port
    (``bound``), the certificate bound to it (``certificate``, its hash, when known) and whether a
    TLS handshake on the port was answered (``answered``; None: not tried)."""

    site: str
    port: int
    bindings: list[str]
    bound: bool
    certificate: str | None = None
    answered: bool | None = None
    message: str = ""


ACTION_RESULTS: dict[Action, type[Result]] = {
    Action.STOP_WEB: WebResult,
    Action.START_WEB: WebResult,
    Action.STOP_TOMCAT: ServiceResult,
    Action.START_TOMCAT: ServiceResult,
    Action.INSTALL_SERVICE: ServiceResult,
    Action.UNINSTALL_SERVICE: ServiceResult,
    Action.START_SERVICE: ServiceResult,
    Action.STOP_SERVICE: ServiceResult,
    Action.BACKUP_PROGRAM_FILES: BackupResult,
    Action.BACKUP_REGISTRY: BackupResult,
    Action.BACKUP_DATABASE: BackupResult,
    Action.BACKUP_VIEWS: BackupResult,
    Action.RESTORE_PROGRAM_FILES: ProgramFilesRestoreResult,
    Action.RESTORE_REGISTRY: RegistryRestoreResult,
    Action.RESTORE_DATABASE: DatabaseRestoreResult,
    Action.REGISTER_DLL: RegisterDllResult,
    Action.REDIRECT_WEBSITE: RedirectResult,
    Action.RUN_INSTALLER: InstallerResult,
    Action.READ_UPGRADE_LOG: UpgradeLogResult,
    Action.DISABLE_TRIGGERS: TriggersResult,
    Action.ENABLE_TRIGGERS: TriggersResult,
    Action.DISABLE_EXCHANGE_INTEGRATION: ExchangeIntegrationResult,
    Action.ENABLE_EXCHANGE_INTEGRATION: ExchangeIntegrationResult,
    Action.INSTALL_REPLICATION_ENGINE: ReplicationEngineResult,
    Action.REMOVE_REPLICATION_ENGINE: ReplicationEngineResult,
    Action.RELOAD_METADATA: MetadataResult,
    Action.WARMUP_LOGON: WarmupResult,
    Action.CHECK_LICENSE: LicenseCheckResult,
    Action.PROBE_LIBRARY: LibraryProbeResult,
    Action.FINGERPRINT_RECORDS: FingerprintResult,
    Action.DATABASE_SESSIONS: DatabaseSessionsResult,
    Action.LIST_DTA_OBJECTS: DtaObjectsResult,
    Action.REMOVE_CRM_SERVICES: CrmServicesRemovedResult,
    Action.UNREGISTER_DLL: UnregisterDllResult,
    Action.DELETE_IIS_APPLICATION: IisApplicationResult,
    Action.DELETE_REGISTRY_KEYS: RegistryKeysResult,
    Action.DELETE_INSTALL_FOLDER: InstallFolderResult,
    Action.APPLY_MAINTENANCE_PLAN: MaintenancePlanResult,
    Action.MAINTENANCE_STATUS: MaintenanceStatus,
    Action.RUN_MAINTENANCE_TASK: MaintenanceRun,
    Action.CHECK_DATABASE_RIGHTS: DatabaseRightsResult,
    Action.CHECK_PREREQUISITES: PrerequisitesResult,
    Action.CHECK_HTTPS_BINDING: HttpsBindingResult,
    Action.LICENSE_DETAILS: LicenseDetails,
    Action.UPDATE_LICENSE_KEY: LicenseUpdateResult,
}
assert set(ACTION_RESULTS) == set(Action)


class ResultError(ValueError):
    """A result that does not fit its action's model; the message names the action and the field."""


R = TypeVar("R", bound=Result)


def parse_result(action: Action | str, data: Any) -> Result:
    """``data`` (a driver's return value, or a record's ``result``) as ``action``'s result model."""
    act = Action(action)
    model = ACTION_RESULTS[act]
    if isinstance(data, model):
        return data
    if isinstance(data, Result):
        raise ResultError(f"{act.value}: a {type(data).__name__} is not a {model.__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "result"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ResultError(
            f"{act.value}: the result does not fit {model.__name__}: {where}: {first['msg']}{more}"
        ) from None


def result_for_wire(result: Result) -> dict[str, Any]:
    """A result as JSON, with its wire names (``bytes``, ``schema``); unset optional fields left out."""
    return dict(result.model_dump(mode="json", by_alias=True, exclude_unset=True))


class OperationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op_id: OpId
    action: str
    params: dict[str, Any] = Field(default_factory=dict)


def _submission(action: Action, params: type[Params]) -> type[BaseModel]:
    """``{op_id, action: "<action>", params: <its params>}`` as a model of its own."""
    try:
        params.model_validate({})
        default: Any = Field(default_factory=params)
    except ValidationError:
        default = ...
    name = "".join(part.title() for part in action.value.split("_")) + "Operation"
    model: type[BaseModel] = create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Run {action.value} (its params: {params.__name__}).",
        op_id=(OpId, ...),
        action=(Literal[action.value], ...),  # type: ignore[arg-type]
        params=(params, default),
    )
    return model


#: ``POST /v1/operations``' body: one schema per action, told apart by ``action`` (a
#: discriminated union), so a client — or a fuzzer reading the OpenAPI — knows each action's params.
SUBMISSIONS: dict[Action, type[BaseModel]] = {a: _submission(a, m) for a, m in ACTION_PARAMS.items()}
if TYPE_CHECKING:
    OperationSubmission = BaseModel
else:
    _ANY_SUBMISSION = Union[tuple(SUBMISSIONS.values())]  # noqa: UP007 - built from a tuple at run time
    OperationSubmission = Annotated[
        _ANY_SUBMISSION,
        Discriminator("action"),
    ]


class OperationRecord(BaseModel):
    """An operation as the agent reports it. ``params`` are shown with secrets masked."""

    op_id: str
    action: Action
    state: OperationState
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float = Field(0.0, ge=0.0, le=1.0)
    result: dict[str, Any] | None = None
    error: str | None = None
    log_tail: list[str] = Field(default_factory=list)
    #: ``operator`` while the action waits for a person (the manual installer: run the wizard by
    #: hand, then ``POST /v1/operations/{op_id}/confirm``); the controller shows the step
    #: ``awaiting_operator``.
    awaiting: Literal["operator"] | None = None
    #: While ``awaiting``: what the person is asked to do, in order (the wizard's pages and the
    #: choice the guide gives on each); empty otherwise.
    choices: list[str] = Field(default_factory=list)

    def parsed_result(self) -> Result:
        """The result as its action's model; :class:`ResultError` when it does not fit."""
        return parse_result(self.action, self.result)

    def result_as(self, model: type[R]) -> R:
        """The result as ``model``, which must be this action's result model::

        backup = record.result_as(BackupResult)   # ResultError for a stop_web record
        """
        expected = ACTION_RESULTS[self.action]
        if expected is not model:
            raise ResultError(f"a {self.action.value} result is a {expected.__name__}, not {model.__name__}")
        parsed = parse_result(self.action, self.result)
        assert isinstance(parsed, model)
        return parsed


class ConfirmRequest(BaseModel):
    """``POST /v1/operations/{op_id}/confirm``: what the person did (kept in the log tail)."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000)


class NodeStatus(BaseModel):
    """The node's observed state (``GET /v1/status``)."""

    name: str
    install_name: str
    version: str | None
    roles: list[str] = Field(default_factory=list)
    web: ServiceStatus
    tomcat: ServiceStatus
    services: dict[str, ServiceStatus] = Field(default_factory=dict)
    replication_engine: bool
    exchange_integration: bool | None = None
    library_reachable: bool | None = None
    free_disk_bytes: int | None = None
    last_iis_start: datetime | None = None
    web_url: str | None = None
    logged_on: int | None = None
    #: Added by the agent: when the agent last did a warm-up logon by itself (after an IIS reset).
    last_warmup_at: datetime | None = None
    #: The version of the web applications Tomcat serves, read from the Tomcat service's own folder
    #: (not the website's, which a restore may redirect); None when the driver cannot tell.
    tomcat_version: str | None = None
    #: The version of each installed CRM service's program (the shared ``Services`` folder), for
    #: the services the driver can read; a restore must put them back too.
    service_versions: dict[str, str] = Field(default_factory=dict)
    driver: str
    protocol: int = PROTOCOL_VERSION


class Heartbeat(BaseModel):
    status: NodeStatus
    agent_url: str | None = None
    sent_at: datetime


class NodeAssignment(BaseModel):
    """What the controller holds for a node: its answer to a heartbeat, and to
    ``GET /api/v1/agents/{name}/state``. The agent answers HAProxy's agent-check from it."""

    state: NodeState
    #: The node's weight (0..1, normally 1), the controller's cap on its share of the logons.
    weight: float = Field(1.0, ge=0, le=1)
    #: The node lost the Replication Engine while it was down (the controller removes a copy).
    fenced: bool = False
