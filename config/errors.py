"""Errors raised by ``config``.

ConfigError                 a setting or stored configuration is unusable (permanent)
├── SettingError            a process setting is missing or malformed; stops start-up
└── SysParamsError          a Custom_SysParams value breaks a rule; ``field`` names it
DatabaseUnavailable         the database did not answer (temporary; retry later)
MigrationError              the state schema could not be brought up to date
"""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem the caller cannot fix by retrying."""


class SettingError(ConfigError):
    """A process setting is missing or malformed. The message is one line naming it."""


class SysParamsError(ConfigError):
    """A cluster setting breaks a rule of multi-server Sage CRM.

    ``field`` is the JSON field (``server_names``, ``http_port`` …) the rule is about,
    so an API can point at it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class DatabaseUnavailable(Exception):
    """The database could not be reached or timed out; worth retrying after a delay."""

    retry_after: float = 1.0


class MigrationError(Exception):
    """The state database schema could not be migrated or verified."""
