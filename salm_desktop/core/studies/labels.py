"""Labels for protection: npz labels, class sub-folders, a CSV file, or none.

``labels`` values accepted by :func:`salm_desktop.core.studies.load_paths`:

- ``None`` (auto): npz labels for npz series; class sub-folder names for image folders with >= 2
  class folders; everything else unlabelled.
- ``"npz"``: only npz labels (other series unlabelled).
- ``"folders"``: the first folder below the input folder names the class (below a
  train/val/test folder when the first level is such split folders), for every kind of series.
- ``"csv:FILE"``: rows ``(path or SeriesInstanceUID, label)``, with or without a header row;
  relative paths are relative to the CSV's folder.
- ``"none"``: no labels.

Class names that are all integers keep their value; otherwise the sorted names are numbered
0..n-1 and ``Series.meta["classes"]`` lists them.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable

from salm_desktop.core.model import LoadResult, Series

SPLIT_FOLDERS = {"train", "training", "val", "valid", "validation", "test", "testing"}
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_HEADER_KEYS = {"path", "file", "filename", "file_name", "image", "filepath", "series", "seriesinstanceuid",
                "series_uid", "seriesuid", "uid", "id", "name"}


class LabelsError(ValueError):
    """A labels source that cannot be used; the message names the file and the problem."""


def parse_spec(labels: str | None) -> tuple[str, Path | None]:
    if labels is None or labels == "" or labels == "auto":
        return "auto", None
    if labels in ("none", "folders", "npz"):
        return labels, None
    if labels.startswith("csv:"):
        path = Path(labels[4:]).expanduser()
        if not labels[4:]:
            raise LabelsError("labels: 'csv:' needs a file name, e.g. csv:labels.csv")
        return "csv", path
    raise LabelsError(f"labels: unknown source {labels!r} (use folders, npz, csv:FILE or none)")


# --------------------------------------------------------------------------------------------
# CSV


def read_csv(path: Path) -> list[tuple[str, str, int]]:
    """Rows (key, label, line number); raises LabelsError for unreadable or malformed files."""
    if not path.is_file():
        raise LabelsError(f"{path}: labels file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: cannot read labels file ({exc})") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows: list[tuple[str, str, int]] = []
    reader = csv.reader(text.splitlines(), dialect)
    try:
        for line_no, row in enumerate(reader, start=1):
            cells = [c.strip() for c in row]
            while len(cells) > 2 and cells[-1] == "":
                cells.pop()
            if not any(cells) or (len(cells) == 1 and cells[0].startswith("#")):
                continue
            if len(cells) != 2:
                raise LabelsError(
                    f"{path}: line {line_no}: expected 2 columns (path or SeriesInstanceUID, label), got {len(cells)}"
                )
            if not cells[0] or not cells[1]:
                raise LabelsError(f"{path}: line {line_no}: empty {'path' if not cells[0] else 'label'}")
            rows.append((cells[0], cells[1], line_no))
    except csv.Error as exc:
        raise LabelsError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    if rows and _is_header(rows[0][0], path.parent):
        rows = rows[1:]
    if not rows:
        raise LabelsError(f"{path}: no label rows")
    return rows


def _is_header(key: str, base: Path) -> bool:
    """A first row like ``path,label`` or ``image_path,class``: not a file, not a UID, no suffix."""
    if key.lower().replace(" ", "") in _HEADER_KEYS:
        return True
    if _UID_RE.match(key) or any(ch in key for ch in "./\\"):
        return False
    candidate = Path(key).expanduser()
    return not (candidate if candidate.is_absolute() else base / candidate).exists()


def _class_map(names: Iterable[str]) -> tuple[dict[str, int], list[str] | None]:
    unique = sorted(set(names))
    if all(_is_int(n) for n in unique):
        return {n: int(n) for n in unique}, None
    return {n: i for i, n in enumerate(unique)}, unique


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _norm(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


def apply_csv(result: LoadResult, csv_path: Path) -> None:
    rows = read_csv(csv_path)
    base = csv_path.resolve().parent
    by_path: dict[str, tuple[str, int]] = {}
    by_uid: dict[str, tuple[str, int]] = {}
    missing: list[str] = []
    for key, label, line in rows:
        candidate = Path(key).expanduser()
        candidate = candidate if candidate.is_absolute() else base / candidate
        if candidate.exists():
            by_path[_norm(candidate)] = (label, line)
        elif _UID_RE.match(key):
            by_uid[key] = (label, line)
        else:
            missing.append(f"line {line}: {key}")
    if missing:
        shown = "; ".join(missing[:10]) + (f"; and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise LabelsError(f"{csv_path}: {len(missing)} row(s) name missing files: {shown}")
    known_uids = {s.meta.get("series_uid") for s in result.series if s.kind == "dicom"}
    unknown = [f"line {line}: {uid}" for uid, (_, line) in by_uid.items() if uid not in known_uids]
    if unknown:
        shown = "; ".join(unknown[:10]) + (f"; and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise LabelsError(f"{csv_path}: {len(unknown)} SeriesInstanceUID(s) not found among the loaded series: {shown}")
    mapping, classes = _class_map([lab for lab, _ in by_path.values()] + [lab for lab, _ in by_uid.values()])
    for series in result.series:
        uid_label = by_uid.get(series.meta.get("series_uid", "")) if series.kind == "dicom" else None
        for sample in series.samples:
            hit = by_path.get(_norm(sample.source.path))
            if hit is None:
                # A row may name a folder: it labels everything below it.
                for parent in sample.source.path.resolve().parents:
                    hit = by_path.get(str(parent))
                    if hit is not None:
                        break
            if hit is None and uid_label is not None:
                hit = uid_label
            sample.label = mapping[hit[0]] if hit is not None else None
        if classes:
            series.meta["classes"] = classes


# --------------------------------------------------------------------------------------------
# Folders


def folder_class(path: Path, root: Path) -> str | None:
    """Class name of a file below ``root``: its first folder (skipping one train/val/test level)."""
    if not root.is_dir():
        return None
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        return None
    if parts and parts[0].lower() in SPLIT_FOLDERS:
        parts = parts[1:]
    return parts[0] if parts else None


def apply_folders(series_list: list[Series], *, require: bool, min_classes: int = 1) -> bool:
    names = {s_id: [folder_class(x.source.path, s.root) for x in s.samples] for s_id, s in enumerate(series_list)}
    all_names = {n for ns in names.values() for n in ns if n is not None}
    if len(all_names) < min_classes or not all_names:
        if require:
            roots = ", ".join(sorted({str(s.root) for s in series_list})) or "(no series)"
            raise LabelsError(f"labels from folders: no class sub-folders found under {roots}")
        return False
    mapping, classes = _class_map(all_names)
    for s_id, series in enumerate(series_list):
        unlabelled = 0
        for sample, name in zip(series.samples, names[s_id]):
            sample.label = mapping[name] if name is not None else None
            unlabelled += name is None
        if classes:
            series.meta["classes"] = classes
        if unlabelled:
            series.warnings.append(f"{unlabelled} file(s) not inside a class folder: unlabelled")
    return True


def apply_labels(result: LoadResult, labels: str | None) -> None:
    mode, csv_path = parse_spec(labels)
    if mode == "csv":
        assert csv_path is not None
        apply_csv(result, csv_path)
        return
    if mode == "none":
        for series in result.series:
            for sample in series.samples:
                sample.label = None
        return
    if mode == "npz":
        if not any(s.kind == "npz" and any(x.label is not None for x in s.samples) for s in result.series):
            raise LabelsError("labels from npz: no npz file with '{split}_labels' arrays was loaded")
        for series in result.series:
            if series.kind != "npz":
                for sample in series.samples:
                    sample.label = None
        return
    if mode == "folders":
        targets = list(result.series)
        for s in targets:
            if s.kind == "npz":
                for sample in s.samples:
                    sample.label = None
        apply_folders([s for s in targets if s.kind != "npz"], require=True)
        return
    # auto: npz labels stay; image folders with >= 2 class folders get folder labels.
    qualifying = [
        s for s in result.series
        if s.kind == "images" and len({folder_class(x.source.path, s.root) for x in s.samples} - {None}) >= 2
    ]
    if qualifying:
        apply_folders(qualifying, require=False, min_classes=2)
