"""load_paths: any mix of files and folders -> Series + skipped files.

Files are found recursively (hidden files and folders are ignored, symlinked folders are not
followed) and classified by name first: NIfTI, npz, PNG/JPEG, NRRD/MetaImage; documentation and
sidecar files (README, LICENSE, .txt, .json, .csv, ...) are ignored silently; every other file is
tried as DICOM (with or without the .dcm suffix) after a cheap check of its first bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from salm_desktop.core.model import LoadResult, Skipped
from salm_desktop.core.progress import Cancelled, Progress
from salm_desktop.core.studies import dicom as _dicom
from salm_desktop.core.studies.images import build_image_series, is_image, probe_image
from salm_desktop.core.studies.labels import apply_labels, parse_spec
from salm_desktop.core.studies.nifti import is_nifti, load_nifti
from salm_desktop.core.studies.npz import load_npz
from salm_desktop.core.studies.volume import is_volume, load_volume

IGNORED_SUFFIXES = {
    ".txt", ".md", ".rst", ".json", ".csv", ".tsv", ".pdf", ".html", ".htm", ".xml", ".yaml", ".yml",
    ".py", ".sh", ".bat", ".log", ".bval", ".bvec", ".ini", ".cfg", ".toml", ".doc", ".docx", ".xls",
    ".xlsx", ".sha256", ".md5", ".sums",
}
IGNORED_NAMES = {"license", "licence", "copying", "readme", "notice", "authors", "changelog", "sha256sums", "md5sums",
                 "thumbs.db", "desktop.ini"}


def is_ignored(path: Path) -> bool:
    """Documentation and sidecar files next to images: not reported at all."""
    name = path.name.lower()
    if name.startswith("."):
        return True
    if path.suffix.lower() in IGNORED_SUFFIXES:
        return True
    stem = name.split(".")[0]
    return stem in IGNORED_NAMES or stem.startswith("readme") or stem.startswith("license")


def _display_path(path: Path) -> Path:
    """A printable stand-in for a path whose name is not valid UTF-8 (for messages only)."""
    return Path(os.fsencode(path).decode("utf-8", "replace"))


def _not_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def special_file_reason(path: Path) -> str | None:
    """Why ``path`` is not read as an input file (never opened to find out), or None for a regular file."""
    try:
        st = os.stat(path)  # follows symlinks; lstat alone would not see a loop
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop: not followed"
        if os.path.islink(path):
            return "broken symbolic link (its target does not exist)"
        return f"cannot be examined ({exc.strerror or exc})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):
            return "not readable (permission denied)"
        return None
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO), not a regular file: not opened"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file, not a regular file: not opened"
    if stat.S_ISSOCK(mode):
        return "socket, not a regular file: not opened"
    if stat.S_ISDIR(mode):
        return None
    return "not a regular file: not opened"


def find_files(paths: Sequence[Path | str], skipped: list[Skipped] | None = None) -> list[tuple[Path, Path]]:
    """(file, input root) for every file under ``paths``, sorted, each file once.

    FIFOs, devices, sockets, symlink loops, unreadable files and folders and names that are not valid
    UTF-8 are never opened; with ``skipped`` given, each is listed there with its reason.
    """
    out: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def skip(path: Path, reason: str) -> None:
        if skipped is not None:
            skipped.append(Skipped(_display_path(path), reason))

    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists() and not root.is_symlink():
            raise FileNotFoundError(f"{root}: no such file or folder")
        root = root.absolute()
        reason = special_file_reason(root)
        if reason is not None:
            skip(root, reason)
            continue
        if root.is_file():
            if _not_utf8(root.name):
                skip(root, "file name is not valid UTF-8: rename it to read it")
                continue
            key = root.resolve()
            if key not in seen:
                seen.add(key)
                out.append((root, root))
            continue

        def unreadable_folder(exc: OSError) -> None:
            skip(Path(exc.filename or root), f"unreadable folder ({exc.strerror or exc})")

        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable_folder):
            kept_dirs = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                if _not_utf8(d):
                    skip(Path(dirpath) / d, "folder name is not valid UTF-8: rename it to read its files")
                    continue
                kept_dirs.append(d)
            dirnames[:] = kept_dirs
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name.startswith("."):
                    continue
                reason = special_file_reason(path)
                if reason is not None:
                    skip(path, reason)
                    continue
                if _not_utf8(name):
                    skip(path, "file name is not valid UTF-8: rename it to read it")
                    continue
                if not path.is_file():
                    continue
                key = path.resolve()
                if key in seen:
                    continue
                seen.add(key)
                out.append((path, root))
    return out


def load_paths(
    paths: Sequence[Path | str],
    labels: str | None = None,
    progress: Progress | None = None,
) -> LoadResult:
    """Find, group and sort every study under ``paths``. Reads headers only; pixels load lazily.

    Raises FileNotFoundError for a path that does not exist and LabelsError for a bad labels
    source. Unreadable or non-image files never abort the scan: they are listed in ``skipped``.
    """
    parse_spec(labels)  # a bad spec fails before any work
    result = LoadResult()
    files = find_files(paths, result.skipped)
    total = len(files)
    dicom_headers: list[_dicom.FrameHeader] = []
    images: dict[Path, list] = defaultdict(list)
    if progress is not None:
        progress.update("load", 0, total, "finding files")
    for done, (path, root) in enumerate(files, start=1):
        try:
            if is_ignored(path) and path != root:
                pass
            elif is_nifti(path):
                _add(result, load_nifti(path, root))
            elif path.suffix.lower() == ".npz":
                _add(result, load_npz(path, root))
            elif is_image(path):
                probed = probe_image(path)
                if isinstance(probed, Skipped):
                    result.skipped.append(probed)
                else:
                    images[root if root.is_dir() else path.parent].append((path, *probed))
            elif is_volume(path):
                _add(result, load_volume(path, root))
            else:
                headers = _dicom.read_headers(path, root)
                if isinstance(headers, Skipped):
                    if path.suffix.lower() in ("", ".dcm", ".dicom", ".ima", ".img") or _dicom.looks_like_dicom(path):
                        result.skipped.append(headers)
                    else:
                        result.skipped.append(Skipped(path, f"not an image file (unknown format {path.suffix or 'without suffix'})"))
                else:
                    dicom_headers.extend(headers)
        except (MemoryError, KeyboardInterrupt, Cancelled):
            raise
        except Exception as exc:  # one bad file never aborts the scan
            text = str(exc).strip().splitlines()
            result.skipped.append(Skipped(path, f"unreadable file ({type(exc).__name__}: {text[0][:200] if text else ''})"))
        if progress is not None:
            progress.update("load", done, total, f"read {done} of {total} files")
    if dicom_headers:
        result.series.extend(_dicom.group_series(dicom_headers, result.skipped))
    for root, found in images.items():
        result.series.append(build_image_series(root, found))
    order = {str(path): i for i, (path, _root) in enumerate(files)}
    result.series.sort(key=lambda s: min((order.get(str(f), len(order)) for f in s.files), default=len(order)))
    apply_labels(result, labels)
    return result


# Label maps saved beside a study (3D Slicer's "<name>_seg.nrrd", "<name>-label.nii.gz", ...): region
# masks for ROI statistics (`--roi`), not images to protect.
LABEL_MAP_STEM_ENDINGS = ("_seg", ".seg", "-seg", "_label", "-label", "_labels", "_labelmap", "-labelmap", "_mask")


def is_label_map(series) -> bool:
    """A NRRD/NIfTI/MetaImage series read from one file whose name marks it as a label map."""
    if series.kind not in ("nrrd", "nifti", "volume", "mha") or len(series.files) != 1:
        return False
    name = series.files[0].name.lower()
    for suffix in (".gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.endswith(LABEL_MAP_STEM_ENDINGS)


def split_label_maps(result: LoadResult) -> list:
    """Take the label maps out of ``result.series`` and return them (files usable with ``--roi``)."""
    maps = [s for s in result.series if is_label_map(s)]
    result.series[:] = [s for s in result.series if not is_label_map(s)]
    return maps


def _add(result: LoadResult, item) -> None:
    if isinstance(item, Skipped):
        result.skipped.append(item)
    elif isinstance(item, list):
        result.series.extend(item)
    else:
        result.series.append(item)
