"""Image-folder writer: the same tree and bit depth. PNG, TIFF and BMP keep their format; lossy
JPEG inputs are written as PNG (same name, ".png"), since the perturbation would not survive JPEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from salm_desktop.core.export.common import (Observer, ProtectedFn, WriteContext, WriteResult, iter_source_files, reread_failure,
                                             stored_dtype_array)
from salm_desktop.core.model import Series

LOSSY_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".webp"}


def output_name(relative: Path) -> Path:
    return relative.with_suffix(".png") if relative.suffix.lower() in LOSSY_SUFFIXES else relative


def _to_image(stored: np.ndarray, source_mode: str) -> Image.Image:
    """Pillow picks the mode from the dtype: uint8 -> L/RGB, uint16 -> I;16, int32 -> I, float32 -> F."""
    if stored.dtype == np.uint16:
        stored = stored.astype("<u2", copy=False)
    elif stored.dtype == np.int16:
        stored = stored.astype(np.int32)
    return Image.fromarray(np.ascontiguousarray(stored))


def write_image_series(series: Series, protected: ProtectedFn, ctx: WriteContext, *, observer: Observer | None = None,
                       done_offset: int = 0, total: int = 0) -> WriteResult:
    result = WriteResult()
    for path, members in iter_source_files(series, ctx.progress, done_offset, total, "image", every=64):
        index, sample = members[0]
        try:
            with Image.open(path) as im:
                mode = im.mode
            original = sample.read()
            native = protected(index, original)
        except Exception as exc:  # noqa: BLE001 - a file that changed under us: skip it with the reason
            result.skipped.append(reread_failure(path, exc))
            continue
        stored = sample.stored.to_stored(original) if native is None else stored_dtype_array(sample, native)
        if observer is not None:
            observer(index, original, sample.stored.to_native(stored))
        dest = ctx.out_root / output_name(ctx.layout.relative(path, series.root))
        dest.parent.mkdir(parents=True, exist_ok=True)
        _to_image(stored, mode).save(dest)
        result.files.append(dest)
    return result
