"""Copies of folders that can be checked afterwards (the guide's program files backup, the
registry exports): an atomic folder copy and a manifest of what it holds.

A manifest is ``{"files": n, "bytes": n, "sha256": …}``; the sha256 covers every file's relative
path and content, so a restore can tell a damaged or partial backup from a good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from node_agent.journal import atomic_write_text


def tree_manifest(root: Path) -> dict[str, Any]:
    """Files, total size and one sha256 over every (relative path, content hash) pair."""
    h = hashlib.sha256()
    files = 0
    size = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        h.update(rel.encode() + b"\0" + digest.digest())
        files += 1
    return {"files": files, "bytes": size, "sha256": h.hexdigest()}


def manifest_path(folder: Path) -> Path:
    return folder.parent / (folder.name + ".manifest.json")


def copy_folder(source: Path, destination: Path) -> dict[str, Any]:
    """Copy ``source`` to ``destination`` (replacing it) via a ``.partial`` folder renamed into
    place, and write ``<destination>.manifest.json`` beside it; returns the manifest."""
    tmp = destination.with_name(destination.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, tmp, symlinks=True)
    manifest = tree_manifest(tmp)
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(tmp, destination)
    atomic_write_text(manifest_path(destination), json.dumps(manifest))
    return manifest


def verify_folder(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest when it still matches; None when there is none; ValueError when it
    does not match (a damaged backup)."""
    mp = manifest_path(folder)
    if not mp.exists():
        return None
    expected: dict[str, Any] = json.loads(mp.read_text(encoding="utf-8"))
    actual = tree_manifest(folder)
    if actual["sha256"] != expected.get("sha256"):
        raise ValueError(f"{folder.name} does not match its manifest")
    return actual


def mirror_folder(source: Path, destination: Path) -> dict[str, Any]:
    """Make ``destination`` hold exactly what ``source`` holds (``robocopy /MIR``): copied via a
    ``.partial`` folder renamed into place, so what the upgrade added there is gone too."""
    tmp = destination.with_name(destination.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, tmp, symlinks=True)
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(tmp, destination)
    return tree_manifest(destination)
