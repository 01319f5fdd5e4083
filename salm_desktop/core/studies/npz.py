"""MedMNIST-style .npz files: ``{split}_images`` (N, H, W[, D or 3]) with ``{split}_labels`` (N, 1).

One Series per split. Scanning reads only the .npy headers (shape, dtype) and the small labels
arrays; the images array of a split is loaded once, on first pixel access, into a cache that all
samples of that split share (npz members cannot be memory-mapped).
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from salm_desktop.core.model import Geometry, IntensityMap, Series, Skipped, Sample, SourceRef, StoredFormat, short_hash
from salm_desktop.core.studies.limits import DEFLATE_MAX_RATIO, PixelReadError, human_bytes, one_line, over_memory_limit

LABELS_MAX_BYTES = 256 * 2**20  # labels are read while scanning: a few bytes per sample, never gigabytes

_SPLIT_ORDER = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


class NpzArrays:
    """Loads a member array of one .npz file on first use and keeps it (shared by samples)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._arrays: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many members were really read (tests check laziness)

    def get(self, key: str) -> np.ndarray:
        array = self._arrays.get(key)
        if array is None:
            with self._lock:
                array = self._arrays.get(key)
                if array is None:
                    with np.load(self.path, allow_pickle=False) as data:
                        array = np.asarray(data[key])
                    self._arrays[key] = array
                    self.loads += 1
        return array

    def reader(self, key: str, index: int) -> Callable[[], np.ndarray]:
        def read() -> np.ndarray:
            try:
                array = self.get(key)
            except MemoryError:
                raise PixelReadError(self.path, f"not enough memory to read {key}") from None
            except Exception as exc:  # zipfile, zlib and numpy raise many types; name the file instead
                raise PixelReadError(self.path, f"cannot read {key} ({one_line(exc)})") from None
            out = np.array(array[index], dtype=np.float32)  # a copy: callers may modify it
            if not np.isfinite(out).all():
                raise PixelReadError(self.path, f"{key}[{index}] contains NaN or infinite values")
            return out

        return read


def _member_header(zf: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(name) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _implausible_member(info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why a member's .npy header cannot describe its data (checked before anything is decompressed)."""
    if any(s < 0 for s in shape):
        return f"{info.filename} has a negative shape {shape}"
    if dtype.hasobject:
        return f"{info.filename} holds Python objects (pickles are never loaded)"
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > info.file_size:
        return f"truncated file: {info.filename} claims {claimed} bytes of data ({shape} {dtype}), the archive holds {info.file_size}"
    if info.compress_type == zipfile.ZIP_STORED and info.file_size > info.compress_size:
        return f"corrupt npz file: {info.filename} is stored uncompressed but claims {info.file_size} bytes in {info.compress_size}"
    if info.file_size > DEFLATE_MAX_RATIO * max(info.compress_size, 1) and info.compress_type == zipfile.ZIP_DEFLATED:
        return (f"{info.filename} claims {human_bytes(info.file_size)} from {human_bytes(info.compress_size)} "
                "of compressed data, more than deflate can expand to")
    return None


def load_npz(path: Path, root: Path) -> list[Series] | Skipped:
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            headers = {k: _member_header(zf, n) for k, n in members.items()}
            for key, name in members.items():
                problem = _implausible_member(zf.getinfo(name), *headers[key])
                if problem:
                    return Skipped(path, problem)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, TypeError, SyntaxError,
            NotImplementedError, RuntimeError) as exc:
        return Skipped(path, f"unreadable npz file ({one_line(exc)})")
    for key, (shape, dtype) in headers.items():
        if key.endswith("_labels"):
            if int(np.prod(shape, dtype=object)) * dtype.itemsize > LABELS_MAX_BYTES:
                return Skipped(path, f"{key} claims {human_bytes(int(np.prod(shape, dtype=object)) * dtype.itemsize)}: not a labels array")
            if dtype.kind not in "uib":
                return Skipped(path, f"{key} has unsupported dtype {dtype} (labels are integers)")
        elif key.endswith("_images"):
            if len(shape) >= 3 and any(s == 0 for s in shape[1:]):
                return Skipped(path, f"{key} has an empty image shape {shape}")
            if len(shape) > 5:
                return Skipped(path, f"{key} has shape {shape}; expected (N, H, W[, D or channels])")
            too_big = over_memory_limit(int(np.prod(shape, dtype=object)), dtype.itemsize)
            if too_big:
                return Skipped(path, f"{key} {shape} {dtype} {too_big}")
    splits = sorted(
        (k[: -len("_images")] for k in headers if k.endswith("_images")),
        key=lambda s: (_SPLIT_ORDER.get(s, 9), s),
    )
    if not splits:
        return Skipped(path, "npz file without '{split}_images' arrays (expected MedMNIST layout)")
    cache = NpzArrays(path)
    rel = _rel(path, root)
    out: list[Series] = []
    label_arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for split in splits:
                lk = f"{split}_labels"
                if lk in headers:
                    label_arrays[split] = np.asarray(data[lk])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        return Skipped(path, f"unreadable npz labels ({one_line(exc)})")
    for split in splits:
        images_key = f"{split}_images"
        shape, dtype = headers[images_key]
        warnings_: list[str] = []
        if len(shape) < 3:
            return Skipped(path, f"{images_key} has shape {shape}; expected (N, H, W[, D])")
        n = shape[0]
        sample_shape = shape[1:]
        labels = label_arrays.get(split)
        label_values: list[int | None] = [None] * n
        labels_key = f"{split}_labels" if labels is not None else None
        if labels is not None:
            lab = labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else labels.reshape(-1, 1)
            if lab.shape[0] != n:
                warnings_.append(f"{labels_key} has {lab.shape[0]} rows for {n} images: labels ignored")
            elif lab.shape[1] != 1:
                warnings_.append(f"{labels_key} is multi-label ({lab.shape[1]} columns): labels ignored")
            else:
                label_values = [int(v) for v in lab[:, 0]]
        else:
            warnings_.append(f"no {split}_labels array: samples unlabelled")
        if dtype.kind not in "uif" or dtype.kind == "b":
            return Skipped(path, f"{images_key} has unsupported dtype {dtype}")
        stored = StoredFormat.for_dtype(dtype)
        channels_last = len(sample_shape) == 3 and sample_shape[-1] in (3, 4) and sample_shape[0] > 4
        samples = [
            Sample(
                key=f"{split}/{i:06d}",
                shape=sample_shape,
                reader=cache.reader(images_key, i),
                stored=stored,
                source=SourceRef(path, frame=None, key=images_key, index=(i,)),
                geometry=Geometry(),
                label=label_values[i],
            )
            for i in range(n)
        ]
        if dtype == np.uint8:
            intensity: IntensityMap | None = IntensityMap.for_uint8()
        else:
            intensity = None
        from salm_desktop.core.studies.lazy import LazyIntensitySeries

        series = LazyIntensitySeries(
            id=short_hash("npz", rel, split),
            kind="npz",
            modality="OT",
            samples=samples,
            intensity=intensity,
            root=root,
            description=f"{path.stem} {split}",
            warnings=warnings_,
            meta={
                "split": split,
                "images_key": images_key,
                "labels_key": labels_key,
                "channels_last": channels_last,
                "arrays": cache,
                "dims": (n,),
                "intensity_unit": "",
            },
        )
        if intensity is None:
            from salm_desktop.core.studies.lazy import robust_intensity

            series.set_intensity_factory(robust_intensity)
        out.append(series)
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() if root.is_dir() else path.name
    except ValueError:
        return path.name
