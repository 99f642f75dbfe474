"""Running host commands as argument lists — never through a shell — so that cancelling an
operation terminates them.

:class:`SubprocessRunner` starts the real process (in its own process group, so a cancelled
operation takes its children with it). :class:`RecordingRunner` stands in for it in tests: it
records every argument list and answers from a script, which is how the windows driver's exact
commands are tested on Linux::

    runner = RecordingRunner({"iisreset": CommandResult(0, "Internet services successfully stopped")})
    await runner.run(["iisreset", "/stop"])
    runner.calls  # [["iisreset", "/stop"]]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Protocol

LineSink = Callable[[str], None]


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str = ""


class CommandRunner(Protocol):
    async def run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_line: LineSink | None = None,
    ) -> CommandResult: ...


class CommandTimeout(Exception):
    pass


class SubprocessRunner:
    """Runs real processes; output (stdout and stderr together) is streamed to ``on_line``."""

    def __init__(self, *, terminate_grace: float = 5.0) -> None:
        self.terminate_grace = terminate_grace

    async def run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_line: LineSink | None = None,
    ) -> CommandResult:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("a command is a non-empty list of strings")
        kwargs: dict[str, object] = {}
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            kwargs["creationflags"] = 0x00000200  # CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env} if env is not None else None,
            **kwargs,  # type: ignore[arg-type]  # the platform-specific process-group options
        )
        lines: list[str] = []

        async def pump() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                lines.append(line)
                if on_line is not None:
                    on_line(line)

        try:
            async with asyncio.timeout(timeout):
                await pump()
                code = await proc.wait()
        except BaseException as exc:
            await self._terminate(proc)
            if isinstance(exc, TimeoutError):
                raise CommandTimeout(f"{PurePath(argv[0]).name} did not finish in {timeout}s") from None
            raise
        return CommandResult(code, "\n".join(lines))

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if sys.platform == "win32":  # pragma: no cover
                proc.terminate()
            else:
                os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.terminate_grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                if sys.platform == "win32":  # pragma: no cover
                    proc.kill()
                else:
                    os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@dataclass
class RecordingRunner:
    """A runner for tests: records each argument list and answers by the program's name.

    ``script`` maps a program name (``argv[0]``'s file name, lower-cased, ``.exe`` dropped) to a
    result, or to a callable taking the argument list. Programs not in it answer exit code 0.
    ``hang`` names programs that wait until cancelled (to test cancel).
    """

    script: dict[str, CommandResult | Callable[[list[str]], CommandResult]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    calls: list[list[str]] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)
    cancelled: list[list[str]] = field(default_factory=list)

    @staticmethod
    def program(argv: list[str]) -> str:
        name = PurePath(argv[0].replace("\\", "/")).name.lower()
        return name.removesuffix(".exe")

    async def run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_line: LineSink | None = None,
    ) -> CommandResult:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("a command is a non-empty list of strings")
        self.calls.append(list(argv))
        self.envs.append(dict(env or {}))
        prog = self.program(argv)
        if prog in self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(list(argv))
                raise
        answer = self.script.get(prog, CommandResult(0, ""))
        result = answer(list(argv)) if callable(answer) else answer
        if on_line is not None:
            for line in result.output.splitlines():
                on_line(line)
        return result
