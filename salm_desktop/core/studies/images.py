"""Folders of PNG/JPEG images: one Series per input folder tree (kind "images").

Scanning opens each file with Pillow, which reads only the header (size, mode). Readers decode on
demand. Grayscale 8-bit stays uint8, 16-bit PNG stays uint16; colour images (RGB, RGBA, palette,
CMYK) are converted to 8-bit grayscale (Pillow "L") with a warning, so every sample is 2D.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from salm_desktop.core.model import Geometry, IntensityMap, Series, Skipped, Sample, SourceRef, StoredFormat, short_hash
from salm_desktop.core.studies.limits import DEFLATE_MAX_RATIO, PixelReadError, one_line, over_memory_limit

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_MODE_DTYPE = {"L": "uint8", "I;16": "uint16", "I;16L": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _reader(path: Path, convert: bool, dtype: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as img:
                if convert:
                    img = img.convert("L")
                array = np.asarray(img)
        except MemoryError:
            raise PixelReadError(path, "not enough memory to decode the image") from None
        except Exception as exc:  # Pillow raises many types on corrupt data; name the file instead
            raise PixelReadError(path, f"cannot decode the image ({one_line(exc)})") from None
        out = array.astype(np.float32)
        if not np.isfinite(out).all():
            raise PixelReadError(path, "image contains NaN or infinite values")
        return out

    return read


def probe_image(path: Path) -> tuple[tuple[int, int], str] | Skipped:
    """(rows, cols), Pillow mode, from the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            mode = img.mode
            fmt = img.format
            bands = len(img.getbands())
    except Image.DecompressionBombError as exc:
        return Skipped(path, f"image too large (decompression bomb limit: {one_line(exc)})")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, TypeError) as exc:
        return Skipped(path, f"unreadable image file ({one_line(exc)})")
    if width <= 0 or height <= 0:
        return Skipped(path, "empty image")
    too_big = over_memory_limit(width * height * bands, 4)
    if too_big:
        return Skipped(path, f"image of {width}x{height} pixels {too_big}")
    if fmt == "PNG":  # deflate-compressed: the claimed size cannot exceed what the bytes present can expand to
        size = path.stat().st_size
        if width * height // 8 > DEFLATE_MAX_RATIO * size:
            return Skipped(path, f"PNG header claims {width}x{height} pixels, impossible for a file of {size} bytes")
    return (height, width), mode


def build_image_series(root: Path, files: list[tuple[Path, tuple[int, int], str]]) -> Series:
    """One Series for the images found under ``root`` (labels are assigned later, see labels.py)."""
    from salm_desktop.core.studies.lazy import LazyIntensitySeries

    samples: list[Sample] = []
    converted = 0
    dtypes: Counter[str] = Counter()
    base = root if root.is_dir() else root.parent
    for path, (rows, cols), mode in sorted(files, key=lambda f: _rel(f[0], base)):
        convert = mode not in _MODE_DTYPE
        dtype = "uint8" if convert else _MODE_DTYPE[mode]
        converted += convert
        dtypes[dtype] += 1
        rel = _rel(path, base)
        samples.append(
            Sample(
                key=rel,
                shape=(rows, cols),
                reader=_reader(path, convert, dtype),
                stored=StoredFormat.for_dtype(dtype),
                source=SourceRef(path, frame=None, key=rel, index=()),
                geometry=Geometry(spacing=(1.0, 1.0)),
                meta={"mode": mode, "converted_to_gray": bool(convert)},
            )
        )
    warnings_: list[str] = []
    if converted:
        warnings_.append(f"{converted} colour image(s) converted to 8-bit grayscale")
    if len(dtypes) > 1:
        warnings_.append("mixed bit depths: " + ", ".join(f"{n} {d}" for d, n in sorted(dtypes.items())))
    if len({s.shape for s in samples}) > 1:
        warnings_.append("images have different sizes")
    only_uint8 = set(dtypes) == {"uint8"}
    series = LazyIntensitySeries(
        id=short_hash("images", root.name),
        kind="images",
        modality="OT",
        samples=samples,
        intensity=IntensityMap.for_uint8() if only_uint8 else None,
        root=root,
        description=root.name,
        warnings=warnings_,
        meta={"dims": (len(samples),), "intensity_unit": ""},
    )
    if not only_uint8:
        from salm_desktop.core.studies.lazy import robust_intensity

        series.set_intensity_factory(robust_intensity)
    return series


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name
