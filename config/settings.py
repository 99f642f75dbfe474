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

ENV_PREFIX = "CRMCLUSTER_"
_PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "token", "admin", "test", "xxx", "none"}
_INSTALL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,29}$")


def _check_token(value: SecretStr | None, *, what: str) -> SecretStr | None:
    if value is None:
        return None
    raw = value.get_secret_value()
    if raw.strip().lower() in _PLACEHOLDERS or len(raw) < 16:
        raise ValueError(f"{what} must be a real secret of 16 characters or more, not a placeholder")
    if any(c.isspace() for c in raw):
        raise ValueError(f"{what} must not contain white space")
    return value


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

    # Custom_SysParams row names: Sage does not publish them, so they are settings.
    sysparam_server_names: str = "ServerNames"
    sysparam_do_load_balancing: str = "DoLoadBalancing"
    sysparam_dtls_server_name: str = "DTLSServerName"
    sysparam_fq_server_names: str = "FQServerNames"
    sysparam_http_port: str = "HTTPPort"
    sysparam_outlook_port: str = "OutlookPort"
    sysparam_doc_store: str = "DocStore"
    sysparam_doc_templates: str = "DocTemplates"

    crm_names: CrmNames = Field(default_factory=CrmNames)
    #: A user is logged on while their Activity row is open and younger than this.
    session_timeout_minutes: int = Field(60, ge=1, le=24 * 60)

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
    )
    @classmethod
    def _row_name(cls, v: str) -> str:
        if not v or len(v) > 100 or not v.isprintable():
            raise ValueError("must be 1 to 100 printable characters")
        return v

    # Derived values ------------------------------------------------------------------------------
    @property
    def embedded_db_url(self) -> str:
        return f"sqlite+aiosqlite:///{(self.data_dir / 'crmcluster.db').resolve()}"

    @property
    def crm_url(self) -> str:
        return self.crm_db_url or self.embedded_db_url

    @property
    def state_url(self) -> str:
        return self.state_db_url or self.embedded_db_url

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
        }


class ControllerSettings(CommonSettings):
    admin_token: SecretStr
    agent_token: SecretStr
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

    @field_validator("admin_token", "agent_token", "operator_token")
    @classmethod
    def _tokens(cls, v: SecretStr | None) -> SecretStr | None:
        return _check_token(v, what="token")

    @model_validator(mode="after")
    def _needs_key(self) -> ControllerSettings:
        if self.secret_key is None:
            raise ValueError(
                "CRMCLUSTER_SECRET_KEY: required by the controller to keep license keys encrypted"
            )
        return self


class AgentSettings(CommonSettings):
    agent_token: SecretStr
    controller_url: str | None = None
    name: str | None = None
    driver: Literal["windows", "sandbox"] = "sandbox"
    heartbeat_interval: float = Field(5.0, gt=0, le=600)

    @field_validator("agent_token")
    @classmethod
    def _tokens(cls, v: SecretStr | None) -> SecretStr | None:
        return _check_token(v, what="token")


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
