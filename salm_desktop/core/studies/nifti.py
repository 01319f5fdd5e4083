"""NIfTI-1/-2 (.nii, .nii.gz): one Series per file, samples are 2D slices along the third array axis.

Pixels are read lazily through nibabel's array proxy (``img.dataobj[:, :, k]``), which also applies
scl_slope/scl_inter, so readers return native values.
"""

from __future__ import annotations

import logging
import warnings as _warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from salm_desktop.core.model import Geometry, IntensityMap, Series, Skipped, Sample, SourceRef, StoredFormat, short_hash
from salm_desktop.core.studies.limits import DEFLATE_MAX_RATIO, MAX_NATIVE_MAGNITUDE, PixelReadError, human_bytes, one_line, over_memory_limit

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _reader(dataobj: Any, index: tuple, path: Path) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")
                out = np.array(dataobj[index], dtype=np.float32)  # a copy, never a view of a memory map
        except MemoryError:
            raise PixelReadError(path, "not enough memory to read the NIfTI data") from None
        except Exception as exc:  # nibabel, gzip and numpy raise many types; name the file instead
            raise PixelReadError(path, f"cannot read NIfTI data ({one_line(exc)})") from None
        if not np.isfinite(out).all():
            raise PixelReadError(path, "NIfTI data contain NaN or infinite values (after scl_slope/scl_inter)")
        return out

    return read


def _implausible(path: Path, img: Any, shape: tuple[int, ...]) -> str | None:
    """Why the header cannot describe the data in this file (checked before any pixel is read)."""
    header = img.header
    dtype = np.dtype(header.get_data_dtype())
    voxels = int(np.prod([int(v) for v in shape], dtype=object))
    claimed = voxels * dtype.itemsize
    size = path.stat().st_size
    offset = float(getattr(img.dataobj, "offset", None) or header.get_data_offset() or 0)  # nibabel's effective offset
    compressed = path.name.lower().endswith(".gz")
    if not np.isfinite(offset) or offset < 0 or (offset > size and not compressed):
        return f"NIfTI vox_offset {offset:g} is outside the file ({size} bytes)"
    if compressed:
        if claimed > DEFLATE_MAX_RATIO * size:
            return (f"NIfTI header claims {human_bytes(claimed)} of data ({'x'.join(map(str, shape))} {dtype}), "
                    f"impossible for a compressed file of {human_bytes(size)}")
    elif int(offset) + claimed > size:
        return (f"truncated file: NIfTI header claims {claimed} bytes of data ({'x'.join(map(str, shape))} {dtype}) "
                f"from byte {int(offset)}, the file has {size} bytes")
    too_big = over_memory_limit(voxels, dtype.itemsize)
    if too_big:
        return f"NIfTI volume {'x'.join(map(str, shape))} {too_big}"
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    if dtype.kind in "ui" and slope is not None and inter is not None and np.isfinite(slope) and np.isfinite(inter):
        info = np.iinfo(dtype)
        if max(abs(float(info.min)), abs(float(info.max))) * abs(float(slope)) + abs(float(inter)) > MAX_NATIVE_MAGNITUDE:
            return f"implausible scaling: NIfTI scl_slope {float(slope):g} / scl_inter {float(inter):g} give values beyond +/-{MAX_NATIVE_MAGNITUDE:g}"
    return None


def load_nifti(path: Path, root: Path) -> Series | Skipped:
    import nibabel as nib

    from salm_desktop.core.studies.lazy import LazyIntensitySeries

    nib_log = logging.getLogger("nibabel.global")  # header repairs are logged there: not the user's business
    log_level = nib_log.level
    nib_log.setLevel(logging.CRITICAL)
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            img = nib.load(str(path))
            shape = tuple(int(v) for v in img.shape)
            header = img.header.copy()
            affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return Skipped(path, f"unreadable NIfTI file ({text[0][:200] if text else type(exc).__name__})")
    finally:
        nib_log.setLevel(log_level)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return Skipped(path, f"not a NIfTI image ({type(img).__name__})")

    # Trailing singleton dimensions beyond the third do not count.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 2 or len(shape) > 4:
        return Skipped(path, f"{len(shape)}D NIfTI (shape {shape}) is not supported (2D, 3D and 4D are)")
    if any(s <= 0 for s in shape):
        return Skipped(path, f"empty NIfTI image (shape {shape})")
    try:
        problem = _implausible(path, img, tuple(int(v) for v in img.shape))
    except (OSError, ValueError, TypeError) as exc:
        problem = f"unreadable NIfTI header ({one_line(exc)})"
    if problem:
        return Skipped(path, problem)
    if not np.all(np.isfinite(affine)):
        return Skipped(path, "NIfTI orientation (qform/sform affine) is not finite")

    dataobj = img.dataobj
    ndim_full = len(img.shape)
    zooms = tuple(float(z) for z in header.get_zooms())
    stored_dtype = np.dtype(header.get_data_dtype())
    # nibabel moves scl_slope/scl_inter from the loaded header to the array proxy.
    slope, inter = getattr(dataobj, "slope", None), getattr(dataobj, "inter", None)
    if slope is None and inter is None:
        slope, inter = header.get_slope_inter()
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    warnings_: list[str] = []
    if stored_dtype.fields is not None or stored_dtype.kind == "c":
        return Skipped(path, f"NIfTI data type {stored_dtype} (RGB/complex) is not supported")
    stored = StoredFormat.for_dtype(stored_dtype.newbyteorder("=") if stored_dtype.byteorder not in "=|" else stored_dtype, slope, inter)

    def full_index(*idx: int) -> tuple:
        # Index the proxy with as many axes as the file has (extra singleton axes -> 0).
        ix: tuple = (slice(None), slice(None)) + tuple(idx)
        return ix + (0,) * (ndim_full - len(ix))

    sample_shape = (shape[0], shape[1])
    spacing = (zooms[0], zooms[1]) if len(zooms) >= 2 else (1.0, 1.0)
    aff = tuple(tuple(float(v) for v in row) for row in affine)
    rel = _rel(path, root)
    samples: list[Sample] = []
    if len(shape) == 2:
        dims: tuple[int, ...] | None = (1,)
        samples.append(_sample("z0000", sample_shape, _reader(dataobj, full_index(), path), stored, path, None, (0,), spacing, aff, 0))
    elif len(shape) == 3:
        dims = (shape[2],)
        for k in range(shape[2]):
            samples.append(
                _sample(f"z{k:04d}", sample_shape, _reader(dataobj, full_index(k), path), stored, path, k, (k,), spacing, aff, k)
            )
    else:
        dims = (shape[3], shape[2])
        for t in range(shape[3]):
            for k in range(shape[2]):
                samples.append(
                    _sample(
                        f"t{t:04d}/z{k:04d}", sample_shape, _reader(dataobj, full_index(k, t), path), stored, path, k, (t, k),
                        spacing, aff, k,
                    )
                )
        warnings_.append(f"4D volume: {shape[3]} time points x {shape[2]} slices")

    descrip = header.get("descrip")
    try:
        description = bytes(np.asarray(descrip).tobytes()).split(b"\x00")[0].decode("ascii", "replace").strip()
    except Exception:
        description = ""
    series = LazyIntensitySeries(
        id=short_hash("nifti", rel),
        kind="nifti",
        modality="OT",
        samples=samples,
        intensity=IntensityMap.for_uint8() if stored_dtype == np.uint8 and slope == 1.0 and inter == 0.0 else None,
        root=root,
        description=description,
        warnings=warnings_,
        meta={
            "affine": affine,
            "header": header,
            "volume_shape": tuple(int(v) for v in img.shape),
            "dims": dims,
            "slice_spacing": zooms[2] if len(zooms) >= 3 else None,
            "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
            "scl_slope": slope,  # nibabel clears them in the loaded header; the writer needs them
            "scl_inter": inter,
            "axcodes": "".join(nib.aff2axcodes(affine)),
            "intensity_unit": "",
        },
    )
    if not series.intensity_is_computed:
        from salm_desktop.core.studies.lazy import robust_intensity

        series.set_intensity_factory(robust_intensity)
    return series


def _sample(key, shape, reader, stored, path, frame, index, spacing, affine, k) -> Sample:
    return Sample(
        key=key,
        shape=shape,
        reader=reader,
        stored=stored,
        source=SourceRef(path, frame=frame, key=None, index=index),
        geometry=Geometry(spacing=spacing, affine=affine, slice_index=k),
    )


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() if root.is_dir() else path.name
    except ValueError:
        return path.name
