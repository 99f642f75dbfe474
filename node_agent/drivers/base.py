"""The host-driver interface every action goes through, and what an action sees while it runs.

A driver implements one coroutine per action, named after it (``stop_web``, ``run_installer`` …)::

    async def backup_registry(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]

and returns the operation's ``result``: a dict (or the model itself) that fits the action's result
model, :data:`node_agent.protocol.ACTION_RESULTS` — the agent checks it before recording it, and
a result that does not fit fails the operation. It raises :class:`ActionFailed` when the step did not do
what the guide asks (the operation reads ``failed`` with that message); cancellation arrives as
:class:`asyncio.CancelledError` at the next ``await`` (subprocesses started through
:meth:`OperationContext.run` are terminated). Errors:

    DriverError                 base of everything a driver raises on purpose
    └── ActionFailed            the action ran and failed; the message says why (permanent)
        └── PathRefused         a path param escapes the configured root
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from node_agent.protocol import Action, NodeStatus, Params
from node_agent.runner import CommandResult, CommandRunner

#: Actions that only look: they run beside others. Every other action holds the node's lock,
#: so two steps never change one server at the same time.
READ_ONLY_ACTIONS: frozenset[Action] = frozenset(
    {
        Action.READ_UPGRADE_LOG,
        Action.CHECK_LICENSE,
        Action.PROBE_LIBRARY,
        Action.FINGERPRINT_RECORDS,
        Action.DATABASE_SESSIONS,
        Action.LIST_DTA_OBJECTS,
        Action.CHECK_DATABASE_RIGHTS,
        Action.CHECK_PREREQUISITES,
        Action.CHECK_HTTPS_BINDING,
        Action.LICENSE_DETAILS,
        Action.WARMUP_LOGON,
        Action.MAINTENANCE_STATUS,
    }
)


class DriverError(Exception):
    pass


class ActionFailed(DriverError):
    pass


class PathRefused(ActionFailed):
    pass


def resolve_under(root: Path, relative: str) -> Path:
    """``root / relative``, refused when it leaves ``root`` (``..``, absolute forms, symlinks out)."""
    rel = PurePath(relative.replace("\\", "/"))
    if rel.is_absolute() or any(p in ("..", "") for p in rel.parts) or ":" in relative:
        raise PathRefused(f"path {relative!r} must stay inside the configured root")
    base = root.resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise PathRefused(f"path {relative!r} leaves the configured root")
    return target


class OperationContext:
    """What a running action may do: report progress, log a line, run a command.

    ``on_change`` is called after every progress or log update (the journal persists it).
    """

    def __init__(
        self,
        *,
        op_id: str,
        action: Action,
        runner: CommandRunner,
        on_change: Callable[[], None] | None = None,
        tail: int = 50,
    ) -> None:
        self.op_id = op_id
        self.action = action
        self.runner = runner
        self.fraction = 0.0
        self.lines: list[str] = []
        #: Every command, T-SQL statement and file operation the action ran (or, in a dry run,
        #: would have run), as the host receives it, secrets masked: the record's
        #: ``result.commands``.
        self.commands: list[str] = []
        #: Set while the action waits for a person (``operator``); :meth:`confirm` ends the wait.
        self.awaiting: str | None = None
        #: What the person is asked to do, in order, while :attr:`awaiting` (the record's ``choices``).
        self.choices: list[str] = []
        self._confirmed: asyncio.Future[str] | None = None
        self._tail = tail
        self._on_change = on_change or (lambda: None)

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.fraction = min(1.0, max(self.fraction, fraction))
        if message:
            self._append(message)
        self._on_change()

    def log(self, line: str) -> None:
        self._append(line)
        self._on_change()

    def record(self, line: str) -> None:
        """Add one command to ``result.commands`` (already rendered and redacted by the caller)."""
        from config.secrets import redact

        self.commands.append(redact(line))
        self._on_change()

    async def wait_for_operator(self, choices: list[str] | str) -> str:
        """Wait until a person confirms (``POST /v1/operations/{op_id}/confirm``); returns the
        note they gave. The record reads ``awaiting: operator`` and lists ``choices`` (what to do,
        in order; one string is one item) meanwhile."""
        if isinstance(choices, str):
            choices = [choices]
        loop = asyncio.get_running_loop()
        self._confirmed = loop.create_future()
        self.choices = list(choices)
        self.awaiting = "operator"
        self.log("awaiting operator: " + "; ".join(choices))
        try:
            return await self._confirmed
        finally:
            self.awaiting = None
            self.choices = []
            self._confirmed = None
            self._on_change()

    def confirm(self, note: str) -> bool:
        """End :meth:`wait_for_operator`; False when the action is not waiting."""
        if self._confirmed is None or self._confirmed.done():
            return False
        self._confirmed.set_result(note)
        return True

    def _append(self, line: str) -> None:
        from config.secrets import redact

        self.lines.append(redact(line)[:500])
        del self.lines[: -self._tail]

    async def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run ``argv`` (never through a shell); its output lines go to the log tail."""
        import subprocess

        from config.secrets import redact

        line = redact(subprocess.list2cmdline(argv))
        self.commands.append(line)
        self.log("$ " + line)
        try:
            result = await self.runner.run(argv, env=env, timeout=timeout, on_line=self.log)
        except OSError as exc:  # not installed, not executable: the step cannot be done here
            raise ActionFailed(f"cannot run {PurePath(argv[0]).name}: {exc.strerror or exc}") from exc
        if check and result.returncode != 0:
            raise ActionFailed(
                f"{PurePath(argv[0]).name} exited with {result.returncode}: "
                + redact(result.output.strip().splitlines()[-1] if result.output.strip() else "")
            )
        return result


ActionHandler = Callable[[Params, OperationContext], Awaitable[dict[str, Any]]]


class HostDriver(abc.ABC):
    """One Sage CRM web server, as the agent sees it."""

    kind: str = "abstract"

    async def start(self) -> None:  # noqa: B027 - most drivers run nothing beside the agent
        """Bring up what the driver runs beside the agent (the sandbox's stand-in web server)."""

    async def stop(self) -> None:  # noqa: B027 - nothing to stop unless start brought something up
        """Stop what :meth:`start` brought up."""

    @abc.abstractmethod
    async def status(self) -> NodeStatus: ...

    @abc.abstractmethod
    async def iis_started_at(self) -> datetime | None:
        """When IIS (or the CRM app pool) last started; None while it is stopped or unknown."""

    def handler(self, action: Action) -> ActionHandler:
        fn = getattr(self, action.value, None)
        if fn is None or not callable(fn):
            raise ActionFailed(f"the {self.kind} driver cannot {action.value}")
        handler: ActionHandler = fn
        return handler

    async def perform(self, action: Action, params: Params, ctx: OperationContext) -> dict[str, Any]:
        return await self.handler(action)(params, ctx)
