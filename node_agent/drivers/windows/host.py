"""What the windows driver does to the machine — commands, T-SQL, file operations — in one place,
each recorded on the operation (``result.commands``) as Windows and SQL Server receive it.

    live       everything runs
    dry_run    nothing runs: the same calls go to a modelled server (:mod:`.model`), which answers
               as Windows would, so a whole upgrade can be walked through on any machine
    read_only  only what changes nothing runs (``sc query``, ``reg query``, ``appcmd list``,
               ``SELECT`` …); anything else fails the step with the command it would have run

How a thing is recorded:

- a command line exactly as ``CreateProcess`` receives it (:func:`subprocess.list2cmdline` of the
  argument list — what :mod:`asyncio` passes on Windows), secrets as ``***``;
- T-SQL as ``[database] text -- ? = value, …`` (its bound parameters, as T-SQL literals);
- the agent's own file operations as ``agent: verb path …`` (they are not commands, but an
  administrator reading the record should see them).

Paths on the host are :class:`~pathlib.PureWindowsPath` whatever the agent runs on; only
:class:`LocalFiles` turns them into paths of this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath
from typing import Any, Literal, Protocol

from config.secrets import redact
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.tsql import SqlExecutor, Statement, render_statement
from node_agent.journal import atomic_write_text
from node_agent.runner import CommandResult, CommandRunner, LineSink

Mode = Literal["live", "dry_run", "read_only"]
WinPath = PureWindowsPath


def command_line(argv: Sequence[str]) -> str:
    """The command line Windows receives for ``argv`` (no shell), secrets masked."""
    return redact(subprocess.list2cmdline(list(argv)))


def program(argv: Sequence[str]) -> str:
    """``argv[0]``'s file name, lower-cased, without ``.exe``."""
    return PureWindowsPath(argv[0]).name.lower().removesuffix(".exe")


#: PowerShell only ever runs these, each a query (``powershell -NoProfile -NonInteractive -Command``).
READ_ONLY_POWERSHELL = frozenset({"(Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory"})
_DISM_READ = ("/english", "/online", "/get-features", "/get-featureinfo", "/format:table", "/format:list")


def changes_nothing(argv: Sequence[str]) -> bool:
    """Commands the read-only mode may run: they only look."""
    prog = program(argv)
    args = [a.lower() for a in argv[1:]]
    verb = args[0] if args else ""
    if prog == "sc":
        return verb in ("query", "queryex", "qc", "qdescription", "qfailure")
    if prog == "reg":
        return verb == "query"
    if prog == "appcmd":
        return verb == "list"
    if prog == "iisreset":
        return args == ["/status"]
    if prog == "robocopy":
        return "/l" in args
    if prog == "netsh":
        return args[:3] == ["http", "show", "sslcert"]
    if prog == "dism":
        return any(a.startswith("/get-") for a in args) and all(
            a in _DISM_READ or a.startswith("/featurename:") for a in args
        )
    if prog == "powershell":
        return args[:3] == ["-noprofile", "-noninteractive", "-command"] and (
            len(argv) == 5 and argv[4] in READ_ONLY_POWERSHELL
        )
    return prog in ("whoami", "hostname")


@dataclass(frozen=True)
class FileInfo:
    size: int
    modified: datetime


class HostFiles(Protocol):
    """The file operations the driver needs, on Windows paths."""

    async def exists(self, path: WinPath) -> bool: ...
    async def is_dir(self, path: WinPath) -> bool: ...
    async def info(self, path: WinPath) -> FileInfo | None: ...
    async def read_text(self, path: WinPath) -> str: ...
    async def write_text(self, path: WinPath, text: str) -> None: ...
    async def mkdir(self, path: WinPath) -> None: ...
    async def rename(self, source: WinPath, target: WinPath) -> None: ...
    async def remove(self, path: WinPath) -> None: ...
    async def remove_tree(self, path: WinPath) -> None: ...
    async def listdir(self, path: WinPath) -> list[str]: ...
    async def manifest(self, path: WinPath) -> dict[str, Any]: ...
    async def free_bytes(self, path: WinPath) -> int | None: ...


def local_path(path: WinPath) -> Path:
    """This machine's path for a host path. On Windows the same; elsewhere (the tests) a Windows
    path built from a POSIX one (``\\tmp\\x``) maps back to it."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows
        return Path(str(path))
    return Path(str(path).replace("\\", "/"))


def _manifest(root: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    files = size = 0
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        h.update(p.relative_to(root).as_posix().lower().encode() + b"\0" + digest.digest())
        files += 1
    return {"files": files, "bytes": size, "sha256": h.hexdigest()}


class LocalFiles:
    """The real file system (every call in a worker thread)."""

    async def exists(self, path: WinPath) -> bool:
        return await asyncio.to_thread(local_path(path).exists)

    async def is_dir(self, path: WinPath) -> bool:
        return await asyncio.to_thread(local_path(path).is_dir)

    async def info(self, path: WinPath) -> FileInfo | None:
        try:
            st = await asyncio.to_thread(local_path(path).stat)
        except OSError:
            return None
        return FileInfo(st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    async def read_text(self, path: WinPath) -> str:
        raw = await asyncio.to_thread(local_path(path).read_bytes)
        # InstallShield writes setup logs in UTF-16 on some versions, ANSI on others.
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return raw.decode("utf-16", errors="replace")
        return raw.decode("utf-8", errors="replace")

    async def write_text(self, path: WinPath, text: str) -> None:
        await asyncio.to_thread(atomic_write_text, local_path(path), text)

    async def mkdir(self, path: WinPath) -> None:
        await asyncio.to_thread(local_path(path).mkdir, parents=True, exist_ok=True)

    async def rename(self, source: WinPath, target: WinPath) -> None:
        await asyncio.to_thread(os.rename, local_path(source), local_path(target))

    async def remove(self, path: WinPath) -> None:
        await asyncio.to_thread(local_path(path).unlink, missing_ok=True)

    async def remove_tree(self, path: WinPath) -> None:
        """Delete the folder and everything under it; a file still in use fails it (the
        caller says what holds it), a folder already gone is fine."""

        def rmtree(p: Path) -> None:
            if p.exists():
                shutil.rmtree(p)

        await asyncio.to_thread(rmtree, local_path(path))

    async def listdir(self, path: WinPath) -> list[str]:
        try:
            return sorted(await asyncio.to_thread(os.listdir, local_path(path)))
        except OSError:
            return []

    async def manifest(self, path: WinPath) -> dict[str, Any]:
        return await asyncio.to_thread(_manifest, local_path(path))

    async def free_bytes(self, path: WinPath) -> int | None:
        try:
            return (await asyncio.to_thread(shutil.disk_usage, local_path(path))).free
        except OSError:
            return None


class ReadOnlyRefused(ActionFailed):
    """The read-only mode met something that would change the server."""


class WindowsHost:
    """Commands, T-SQL and files, recorded on the operation and guarded by the mode."""

    def __init__(self, *, runner: CommandRunner, sql: SqlExecutor, files: HostFiles, mode: Mode) -> None:
        self.runner = runner
        self.sql = sql
        self.files = files
        self.mode = mode

    def _refuse(self, ctx: OperationContext | None, line: str) -> None:
        if ctx is not None:
            ctx.record(f"(not run: read-only mode) {line}")
        raise ReadOnlyRefused(f"read-only mode: this would change the server, so it was not run: {line}")

    # Commands -------------------------------------------------------------------------------------
    async def run(
        self,
        ctx: OperationContext,
        argv: list[str],
        *,
        ok: Collection[int] = (0,),
        timeout: float | None = 300,
    ) -> CommandResult:
        """Run ``argv``; an exit code outside ``ok`` fails the step (its last output line said)."""
        line = command_line(argv)
        if self.mode == "read_only" and not changes_nothing(argv):
            self._refuse(ctx, line)
        ctx.record(line)
        ctx.log("$ " + line)
        try:
            result = await self.runner.run(argv, timeout=timeout, on_line=ctx.log)
        except OSError as exc:
            raise ActionFailed(f"cannot run {PureWindowsPath(argv[0]).name}: {exc.strerror or exc}") from exc
        if result.returncode not in ok:
            last = result.output.strip().splitlines()[-1] if result.output.strip() else ""
            raise ActionFailed(
                f"{PureWindowsPath(argv[0]).name} exited with {result.returncode}: {redact(last)}".rstrip(
                    ": "
                )
            )
        return result

    async def query(self, ctx: OperationContext | None, argv: list[str]) -> CommandResult:
        """A command that only looks (status, checks): never fails; a missing program reads 127."""
        assert changes_nothing(argv), argv
        if ctx is not None:
            ctx.record(command_line(argv))
        try:
            return await self.runner.run(argv, timeout=60)
        except OSError as exc:
            return CommandResult(127, str(exc))

    def guarded_runner(self, ctx: OperationContext) -> CommandRunner:
        """A runner for code that calls ``ctx.run`` itself: this host's runner, refusing in the
        read-only mode what would change the server."""
        host = self

        class _Guarded:
            async def run(
                self,
                argv: list[str],
                *,
                env: Mapping[str, str] | None = None,
                timeout: float | None = None,
                on_line: LineSink | None = None,
            ) -> CommandResult:
                if host.mode == "read_only" and not changes_nothing(argv):
                    host._refuse(ctx, command_line(argv))
                return await host.runner.run(argv, env=env, timeout=timeout, on_line=on_line)

        return _Guarded()

    # T-SQL ----------------------------------------------------------------------------------------
    async def execute(self, ctx: OperationContext | None, statement: Statement) -> list[tuple[Any, ...]]:
        line = render_statement(statement)
        if self.mode == "read_only" and statement.changes:
            self._refuse(ctx, line)
        if ctx is not None:
            ctx.record(line)
        return await self.sql.execute(statement)

    async def batch(
        self, ctx: OperationContext, statements: list[Statement], *, always: Sequence[Statement] = ()
    ) -> list[list[tuple[Any, ...]]]:
        """Statements on ONE connection, in order (exclusive access held across them); ``always``
        run after them on the same connection even when one failed."""
        lines = [render_statement(s) for s in [*statements, *always]]
        if self.mode == "read_only" and any(s.changes for s in [*statements, *always]):
            self._refuse(ctx, " ; ".join(lines))
        for line in lines:
            ctx.record(line)
        return await self.sql.session(statements, always=always)

    # Files ------------------------------------------------------------------------------------------
    def _file_op(self, ctx: OperationContext | None, line: str, *, changes: bool) -> None:
        if self.mode == "read_only" and changes:
            self._refuse(ctx, line)
        if ctx is not None:
            ctx.record(line)

    async def read_text(self, ctx: OperationContext | None, path: WinPath) -> str:
        self._file_op(ctx, f"agent: read {path}", changes=False)
        try:
            return await self.files.read_text(path)
        except OSError as exc:
            raise ActionFailed(f"cannot read {path}: {exc.strerror or exc}") from exc

    async def write_text(self, ctx: OperationContext, path: WinPath, text: str, *, what: str = "") -> None:
        self._file_op(ctx, f"agent: write {path}" + (f" ({what})" if what else ""), changes=True)
        try:
            await self.files.write_text(path, text)
        except OSError as exc:
            raise ActionFailed(f"cannot write {path}: {exc.strerror or exc}") from exc

    async def mkdir(self, ctx: OperationContext, path: WinPath) -> None:
        self._file_op(ctx, f"agent: mkdir {path}", changes=True)
        try:
            await self.files.mkdir(path)
        except OSError as exc:
            raise ActionFailed(f"cannot create {path}: {exc.strerror or exc}") from exc

    async def rename(self, ctx: OperationContext, source: WinPath, target: WinPath) -> None:
        self._file_op(ctx, f"agent: rename {source} -> {target}", changes=True)
        try:
            await self.files.rename(source, target)
        except OSError as exc:
            raise ActionFailed(
                f"cannot rename {source} to {target}: {exc.strerror or exc} (is something still using it?)"
            ) from exc

    async def remove(self, ctx: OperationContext, path: WinPath) -> None:
        self._file_op(ctx, f"agent: delete {path}", changes=True)
        try:
            await self.files.remove(path)
        except OSError as exc:
            raise ActionFailed(f"cannot delete {path}: {exc.strerror or exc}") from exc

    async def remove_tree(self, ctx: OperationContext, path: WinPath) -> None:
        self._file_op(ctx, f"agent: delete folder {path}", changes=True)
        try:
            await self.files.remove_tree(path)
        except OSError as exc:
            raise ActionFailed(
                f"cannot delete {path}: {exc.strerror or exc} (is something still using it?)"
            ) from exc

    async def manifest(self, ctx: OperationContext, path: WinPath) -> dict[str, Any]:
        self._file_op(ctx, f"agent: checksum every file under {path}", changes=False)
        return await self.files.manifest(path)
