"""npz writer: the same keys and splits as the source file; protected splits get the protected
stored values, every other array is copied unchanged."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from salm_desktop.core.export.common import ExportError, OutputLayout, ProtectedFn, WriteResult, stored_dtype_array
from salm_desktop.core.model import Series, Skipped
from salm_desktop.core.progress import Progress


def _is_compressed(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(info.compress_type != zipfile.ZIP_STORED for info in zf.infolist())
    except zipfile.BadZipFile:
        return False


def write_npz_file(
    path: Path,
    parts: list[tuple[Series, ProtectedFn | None]],
    out_root: Path,
    layout: OutputLayout,
    *,
    observer: Callable[[Series, int, np.ndarray, np.ndarray], None] | None = None,
    progress: Progress | None = None,
) -> WriteResult:
    """Write one npz file. ``parts`` are the series (splits) that came from ``path``, each with its
    ``protected`` function, or ``None`` for a split that is copied unchanged."""
    result = WriteResult()
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.array(data[key]) for key in data.files}
    except (FileNotFoundError, PermissionError) as exc:
        result.skipped.append(Skipped(path, f"could not be read again for export: {exc.strerror or exc}"))
        return result
    except Exception as exc:  # noqa: BLE001
        result.skipped.append(Skipped(path, f"could not be read again for export: {exc}"))
        return result

    root = parts[0][0].root if parts else path
    for series, protected in parts:
        if protected is None:
            continue
        key = series.meta.get("images_key")
        if key is None and series.samples:
            key = series.samples[0].source.key
        if key not in arrays:
            raise ExportError(f"{path}: key {key!r} of split {series.meta.get('split')!r} not found")
        images = arrays[key]
        for i, sample in enumerate(series.samples):
            if progress is not None and i % 256 == 0:
                progress.check()
            original = sample.read()
            native = protected(i, original)
            if native is None:
                continue
            position = tuple(int(v) for v in (sample.source.index or (i,)))
            stored = stored_dtype_array(sample, native).astype(images.dtype, copy=False)
            if images[position].shape != stored.shape:
                if images[position].size != stored.size:
                    raise ExportError(f"{path}: {key}{list(position)} has shape {images[position].shape}, sample {stored.shape}")
                stored = stored.reshape(images[position].shape)  # e.g. a trailing channel axis of 1
            images[position] = stored
            if observer is not None:
                observer(series, i, original, sample.stored.to_native(stored.reshape(sample.shape)))
        arrays[key] = images

    dest = out_root / layout.relative(path, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    saver = np.savez_compressed if _is_compressed(path) else np.savez
    with open(dest, "wb") as handle:  # a file handle: numpy must not append ".npz" to the name
        saver(handle, **arrays)
    result.files.append(dest)
    return result
