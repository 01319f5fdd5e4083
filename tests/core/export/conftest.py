"""Helpers shared by the export tests: hashing inputs, running a small job."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import pytest


def tree_hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def hashes():
    """``hashes(*roots)`` -> {path: sha256} of every file under the roots."""
    return tree_hashes


def dciodvfy_errors(path: Path) -> set[str]:
    """dciodvfy's error lines for one file (the values it quotes are dropped: a de-identified copy has others).

    A file's answer is kept while the file is unchanged (the same source files are checked by several modules)."""
    stat = Path(path).stat()
    return _dciodvfy_errors(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _dciodvfy_errors(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    import re
    import subprocess

    proc = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).splitlines()
    return frozenset(re.sub(r"\[[^\]]*\]|= <[^>]*>|<[0-9.]+>", "", line).strip() for line in lines if line.startswith("Error"))



@pytest.fixture(scope="session")
def dciodvfy():
    """``dciodvfy(path)`` -> the set of dciodvfy error lines of one file."""
    return dciodvfy_errors
