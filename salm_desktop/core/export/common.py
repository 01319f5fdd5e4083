"""Helpers every writer shares: where an output file goes, hashing, and what a writer returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from salm_desktop.core.model import Sample, Series, Skipped

if TYPE_CHECKING:
    from salm_desktop.core.export.deid import DicomDeidentifier
    from salm_desktop.core.progress import Progress

# ``protected(sample_index, original) -> native float32 array`` or ``None`` where the sample is copied unchanged;
# ``original`` is the sample's native values the writer has just decoded (each sample is decoded once for export).
ProtectedFn = Callable[[int, np.ndarray], "np.ndarray | None"]


Observer = Callable[[int, np.ndarray, np.ndarray], None]  # (sample index, original, written back) in native units


class ExportError(Exception):
    """A problem writing the output (one line, names the file and the reason)."""


@dataclass
class WriteResult:
    """What one writer call produced."""

    files: list[Path] = field(default_factory=list)  # absolute paths of files written
    uid_map: dict[str, str] = field(default_factory=dict)  # old UID -> new UID (DICOM only)
    skipped: list[Skipped] = field(default_factory=list)
    pairs: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # (index, original, stored-back)

    def extend(self, other: "WriteResult") -> None:
        self.files.extend(other.files)
        self.uid_map.update(other.uid_map)
        self.skipped.extend(other.skipped)
        self.pairs.extend(other.pairs)


class OutputLayout:
    """Maps an input file to its place in the output tree.

    The output mirrors the input tree: a file found under an input folder keeps its path relative to
    that folder; a file given directly keeps its name. With several inputs, each input folder gets its
    own sub-folder (named after it, made unique) so that two inputs never collide.
    """

    def __init__(self, roots: list[Path]) -> None:
        self._prefix: dict[Path, Path] = {}
        resolved = [Path(r).resolve() for r in roots]
        multi = len(resolved) > 1
        used: set[str] = set()
        for root in resolved:
            if root in self._prefix:
                continue
            if not multi or root.is_file() or not root.exists():
                self._prefix[root] = Path()
                continue
            name = root.name or "input"
            candidate, n = name, 2
            while candidate in used:
                candidate, n = f"{name}_{n}", n + 1
            used.add(candidate)
            self._prefix[root] = Path(candidate)

    def relative(self, path: Path, root: Path) -> Path:
        path, root = Path(path).resolve(), Path(root).resolve()
        prefix = self._prefix.get(root, Path())
        if path == root or not root.is_dir():
            return prefix / path.name
        try:
            return prefix / path.relative_to(root)
        except ValueError:  # not under the root (should not happen): keep the name only
            return prefix / path.name


@dataclass(frozen=True)
class WriteContext:
    """What every writer of one job shares (see export/writers.py)."""

    out_root: Path  # the job's temporary folder
    layout: OutputLayout
    progress: "Progress | None" = None
    uid_salt: str = ""  # derived DICOM UIDs depend on the settings
    derivation: Callable[[Series], str] = lambda series: ""  # DerivationDescription of a series
    deidentifier: "DicomDeidentifier | None" = None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def samples_by_file(series: Series) -> dict[Path, list[tuple[int, Sample]]]:
    """Samples of a series grouped by their source file, in series order."""
    groups: dict[Path, list[tuple[int, Sample]]] = {}
    for index, sample in enumerate(series.samples):
        groups.setdefault(Path(sample.source.path), []).append((index, sample))
    return groups


def iter_source_files(series: Series, progress: "Progress | None", done_offset: int = 0, total: int = 0,
                      what: str = "file", every: int = 1):
    """(path, members) per source file of ``series``, reporting export progress (each a cancel point)."""
    groups = samples_by_file(series)
    for n, (path, members) in enumerate(groups.items()):
        if progress is not None and n % every == 0:
            progress.update("export", done_offset + n, total or len(groups), f"series {series.id}: {what} {n + 1}/{len(groups)}")
        yield path, members


def read_members(members: list[tuple[int, Sample]], protected: ProtectedFn) -> tuple[dict, dict]:
    """Original and protected native values of the samples of one source file, by sample index."""
    originals = {index: sample.read() for index, sample in members}
    return originals, {index: protected(index, originals[index]) for index, _ in members}


def reread_failure(path: Path, exc: BaseException) -> Skipped:
    """A source file that can no longer be read at export time (moved, changed, deleted)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return Skipped(path, f"could not be read again for export: {text}")


def stored_dtype_array(sample: Sample, native: np.ndarray) -> np.ndarray:
    """Native values -> the sample's stored type (rounded, clipped), checked for shape."""
    native = np.asarray(native, dtype=np.float32)
    if native.shape != tuple(sample.shape):
        raise ExportError(f"{sample.source.path}: protected array has shape {native.shape}, expected {sample.shape}")
    return sample.stored.to_stored(native)
