"""The words of an upgrade run: its request, statuses, phases and the persisted step record.

A run moves through these statuses (DESIGN.md "Controller contract")::

    planned ──start──> running ──(sign-off gate)──> awaiting_approval ──approve──> running
       │                 │  ──pause──> paused ──resume──> running
       │                 │  ──(manual installer waits)──> awaiting_operator ──confirm──> running
     abort               │  ──step fails, policy pause──> paused (retry the step, or roll back)
       v                 │  ──step fails, policy restore / abort / rollback──> restoring
    aborted              │  ──"NB must be fixed", a failed script──> awaiting_fix ──resolve, resume──> running
                         │  ──(acceptance hold)──> awaiting_acceptance ──accept──> running (users return)
                         │  ──step fails after users returned──> paused (never restored on its own)
                         v                                                       │
                     succeeded ──rollback──> restoring ──> restored | aborted | failed

Only the leader's reconcile loop writes ``status``; operators write ``requested`` (``pause``,
``abort``, ``rollback``) and the loop acts on it at the next safe point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from config.input_types import Bool, Int
from node_agent.protocol import Action, RelPath, Version


class RunStatus(StrEnum):
    PLANNED = "planned"
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    #: A step waits for a person (the manual installer: run the wizard, then confirm); the
    #: loop goes on following it, and the run's other lanes go on.
    AWAITING_OPERATOR = "awaiting_operator"
    #: The upgrade log (or a script) says something must be fixed by hand: resolve, then resume.
    AWAITING_FIX = "awaiting_fix"
    #: Upgraded, checked and backed up, users still out: the operator's tests, then accept.
    AWAITING_ACCEPTANCE = "awaiting_acceptance"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RESTORING = "restoring"
    RESTORED = "restored"
    ABORTED = "aborted"


#: Statuses in which the reconcile loop drives the run.
DRIVEN = frozenset({RunStatus.RUNNING, RunStatus.AWAITING_OPERATOR, RunStatus.RESTORING})
#: Statuses of a run that still holds the cluster (no second run may start meanwhile).
ACTIVE = frozenset(
    {
        RunStatus.RUNNING,
        RunStatus.PAUSED,
        RunStatus.AWAITING_APPROVAL,
        RunStatus.AWAITING_OPERATOR,
        RunStatus.AWAITING_FIX,
        RunStatus.AWAITING_ACCEPTANCE,
        RunStatus.RESTORING,
    }
)
TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.RESTORED, RunStatus.ABORTED})


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    #: Sent and running on the agent, which waits for a person to act and confirm
    #: (``POST /upgrades/{id}/steps/{step_id}/confirm``); then it is verified as usual.
    AWAITING_OPERATOR = "awaiting_operator"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    #: Finished with findings an operator must fix by hand (``resolve``), then run again on resume.
    AWAITING_FIX = "awaiting_fix"

    @property
    def done(self) -> bool:
        return self in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


class Phase(StrEnum):
    """DESIGN.md "The upgrade, in the guide's order", steps 2 to 8."""

    FREEZE = "freeze"
    BACKUP = "backup"
    BASELINE = "baseline"
    DATABASE_SERVER = "database_server"
    OTHER_SERVERS = "other_servers"
    AFTER = "after"
    RESTORE = "restore"


class Local(StrEnum):
    """Steps the controller carries out itself (every other step is an agent :class:`Action`)."""

    SIGNOFF = "signoff"  # the client's sign-off gate: waits for approve
    TELL_USERS = "tell_users"  # balancer 'draining', then a grace period
    LOCK_OUT = "lock_out"  # balancer 'maintenance' on every server
    VERIFY_DISCONNECTED = "verify_disconnected"  # database_sessions: none from any server
    ONE_REPLICATION_ENGINE = "one_replication_engine"
    SMOKE_CHECK = "smoke_check"
    ACCEPTANCE = "acceptance"  # the acceptance hold: waits for accept (the guide's live-upgrade tests)
    RETURN_TO_SERVICE = "return_to_service"  # balancer 'up': users return (``returned_at``)
    VERIFY_SERVICE = "verify_service"  # with users back: every server up and serving logons
    VERIFY_RESTORE = "verify_restore"


LOCAL_ACTIONS = frozenset(a.value for a in Local)
#: Agent actions that change a node: once one is sent after the freeze, the node is *touched*.
CHANGING_ACTIONS = frozenset(
    {
        Action.RUN_INSTALLER.value,
        Action.DISABLE_TRIGGERS.value,
        Action.ENABLE_TRIGGERS.value,
        Action.RELOAD_METADATA.value,
        Local.ONE_REPLICATION_ENGINE.value,
    }
)

FailurePolicy = Literal["restore", "pause"]
Request = Literal["pause", "abort", "rollback"]


class DatabaseLoginIn(BaseModel):
    """The SQL Server login the database server's installer uses (the wizard's step 4)."""

    model_config = ConfigDict(extra="forbid")

    server: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._\\-]+$")
    port: Int = Field(1433, ge=1, le=65535)
    user: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@\\-]+$")
    password: SecretStr


class UpgradeRequest(BaseModel):
    """Body of ``POST /api/v1/upgrades``."""

    model_config = ConfigDict(extra="forbid")

    target_version: Version
    license_key: SecretStr
    batch_size: Int = Field(1, ge=1, le=1000)
    failure_policy: FailurePolicy = "restore"
    require_signoff: Bool = False
    #: Hold the run as ``awaiting_acceptance`` once upgraded, checked and backed up, users still out,
    #: until ``POST /upgrades/{id}/accept``: the guide's "Testing a live upgrade" before users return.
    require_acceptance: Bool = True
    backup_location: RelPath | None = None
    overrides: list[str] = Field(default_factory=list, max_length=50)
    #: The SQL login for the database server's installer; its password is kept encrypted.
    database: DatabaseLoginIn | None = None
    #: The wizard's "Disable triggers if required": disabled around the database upgrade.
    disable_triggers: Bool = False
    #: Seconds users are told (balancer 'draining') before they are locked out.
    drain_grace: float = Field(0.0, ge=0, le=24 * 3600)
    #: Seconds any step may take (default: the controller's ``step_timeout``) ...
    step_timeout: float | None = Field(None, gt=0, le=7 * 24 * 3600)
    #: ... and per action, e.g. ``{"run_installer": 3600}``.
    step_timeouts: dict[str, float] = Field(default_factory=dict, max_length=64)

    @field_validator("license_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip() or len(v.get_secret_value()) > 200:
            raise ValueError("must be 1 to 200 characters")
        return v

    @field_validator("step_timeouts")
    @classmethod
    def _timeouts(cls, v: dict[str, float]) -> dict[str, float]:
        known = {a.value for a in Action} | LOCAL_ACTIONS
        for action, seconds in v.items():
            if action not in known:
                raise ValueError(f"unknown action {action!r}")
            if not 0 < seconds <= 7 * 24 * 3600:
                raise ValueError(f"time-out of {action} must be between 0 and a week")
        return v

    def options(self) -> dict[str, Any]:
        """What is stored in ``upgrade_runs.options`` (no secrets)."""
        return {
            "batch_size": self.batch_size,
            "failure_policy": self.failure_policy,
            "require_signoff": self.require_signoff,
            "require_acceptance": self.require_acceptance,
            "backup_location": self.backup_location,
            "overrides": list(self.overrides),
            "disable_triggers": self.disable_triggers,
            "drain_grace": self.drain_grace,
            "step_timeout": self.step_timeout,
            "step_timeouts": dict(self.step_timeouts),
            "database": (
                {"server": self.database.server, "port": self.database.port, "user": self.database.user}
                if self.database
                else None
            ),
        }


class TickedRow(BaseModel):
    """One row of the "Testing a live upgrade" table the operator ticks, with its own note."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    note: str | None = Field(None, max_length=2000)


class AcceptRequest(BaseModel):
    """Body of ``POST /api/v1/upgrades/{id}/accept``: the rows the operator tested and a note."""

    model_config = ConfigDict(extra="forbid")

    rows: list[TickedRow | str] = Field(default_factory=list, max_length=64)
    note: str = Field(min_length=1, max_length=4000)

    def ticked(self) -> dict[str, str | None]:
        """``{row id: its note}`` of the ticked rows."""
        out: dict[str, str | None] = {}
        for row in self.rows:
            if isinstance(row, str):
                out[row] = None
            else:
                out[row.id] = row.note
        return out


class ResolveRequest(BaseModel):
    """Body of ``POST /api/v1/upgrades/{id}/steps/{step_id}/resolve``: how it was fixed by hand."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=4000)


class RollbackRequest(BaseModel):
    """Body of ``POST /api/v1/upgrades/{id}/rollback`` (optional): on a run whose users were back,
    ``accept_data_loss_since`` must equal its ``returned_at``: what users wrote since is lost."""

    model_config = ConfigDict(extra="forbid")

    accept_data_loss_since: str | None = Field(None, max_length=40)


@dataclass
class Step:
    """One persisted step (``upgrade_steps``): written before and after it runs.

    ``op_id`` is ``{run}.{step}.{attempt}`` — deterministic, so a restarted controller finds the
    operation it already sent instead of sending it again. ``params`` never hold a secret: the
    installer's license key and password are ``{"$secret": name}`` placeholders filled at send time.
    """

    run_id: str
    id: str
    seq: int
    wave: int
    phase: str
    node: str | None
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    op_id: str | None = None
    timeout: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    result: dict[str, Any] | None = None

    @property
    def is_local(self) -> bool:
        return self.action in LOCAL_ACTIONS

    def op_id_for(self, attempt: int) -> str:
        return f"{self.run_id}.{self.id}.{attempt}"

    def public(self) -> dict[str, Any]:
        """The step as the API shows it (DESIGN.md's step fields, plus wave and evidence)."""
        return {
            "id": self.id,
            "phase": self.phase,
            "node": self.node,
            "action": self.action,
            "status": self.status.value,
            "attempt": self.attempt,
            "op_id": self.op_id,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "message": self.message,
            "wave": self.wave,
            "result": self.result,
        }


@dataclass
class Run:
    """One persisted run (``upgrade_runs``). ``context`` holds what later steps need: the nodes as
    planned, backups made, the record baseline, the touched nodes, the lock-out times."""

    id: str
    status: RunStatus
    target_version: str
    from_version: str | None
    options: dict[str, Any]
    preflight: list[dict[str, Any]]
    context: dict[str, Any]
    secrets: str | None = None
    requested: str | None = None
    nodes: list[dict[str, Any]] = field(default_factory=list)
    message: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def blocking(self) -> list[str]:
        """Failing preflight findings the operator has not overridden."""
        return [f["name"] for f in self.preflight if f["status"] == "fail" and not f.get("overridden")]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


iso = _iso
