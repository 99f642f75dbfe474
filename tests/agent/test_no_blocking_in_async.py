"""No copy, move, tree walk or fsync runs on the agent's event loop: inside an ``async def`` of
``node_agent``, such calls go through ``asyncio.to_thread`` (the journal has its own writer).

A small, single-file write (``atomic_write_text`` of a state file) is allowed: it is one fsync of
a few hundred bytes; copies of program files, tree hashes and removals of folders are not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import node_agent

#: Calls that copy, move, remove or hash whole trees, or force data to disk.
BLOCKING = {
    ("shutil", "copy"),
    ("shutil", "copy2"),
    ("shutil", "copyfile"),
    ("shutil", "copytree"),
    ("shutil", "move"),
    ("shutil", "rmtree"),
    ("os", "fsync"),
    (None, "copy_folder"),
    (None, "tree_manifest"),
    (None, "verify_folder"),
    (None, "copy_to"),
    (None, "remove_replication_engine"),
    (None, "add_replication_engine"),
}


def _name(call: ast.Call) -> tuple[str | None, str] | None:
    fn = call.func
    if isinstance(fn, ast.Name):
        return None, fn.id
    if isinstance(fn, ast.Attribute):
        owner = fn.value.id if isinstance(fn.value, ast.Name) else None
        return owner, fn.attr
    return None


def blocking_calls_in_async(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_async: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.AsyncFunctionDef):
                visit(child, True)
            elif isinstance(child, ast.FunctionDef | ast.Lambda):
                visit(child, False)  # a helper run in a thread, or a callback
            elif isinstance(child, ast.Call):
                name = _name(child)
                if name is not None and name[1] == "to_thread":
                    continue  # what it is given runs in a worker thread
                if in_async and name is not None and (name in BLOCKING or (None, name[1]) in BLOCKING):
                    found.append((child.lineno, ast.unparse(child.func)))
                visit(child, in_async)
            else:
                visit(child, in_async)

    visit(ast.parse(source), False)
    return found


def test_the_check_sees_a_blocking_copy() -> None:
    bad = "async def backup(src, dst):\n    shutil.copytree(src, dst)\n    return tree_manifest(dst)\n"
    good = (
        "async def backup(src, dst):\n"
        "    await asyncio.to_thread(shutil.copytree, src, dst)\n"
        "    def work():\n        shutil.rmtree(dst)\n"
        "    await asyncio.to_thread(work)\n"
    )
    assert blocking_calls_in_async(bad) == [(2, "shutil.copytree"), (3, "tree_manifest")]
    assert blocking_calls_in_async(good) == []


def test_no_blocking_file_work_in_the_agents_async_code() -> None:
    root = Path(node_agent.__file__).parent
    offences = [
        f"{path.relative_to(root.parent)}:{line}: {call}"
        for path in sorted(root.rglob("*.py"))
        for line, call in blocking_calls_in_async(path.read_text(encoding="utf-8"))
    ]
    assert offences == [], "blocking calls on the event loop:\n" + "\n".join(offences)
