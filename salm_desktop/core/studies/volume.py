"""Other 3D volume files read with SimpleITK (NRRD .nrrd/.nhdr, MetaImage .mha/.mhd): kind "nrrd".

Scanning reads the header only (``ImageFileReader.ReadImageInformation``). The whole volume is
read on the first pixel access and shared by the slices of that file (SimpleITK cannot read one
slice of a compressed NRRD). Samples are 2D slices along the volume's third axis; geometry is in
DICOM terms (LPS): ``position`` of each slice and ``orientation`` = the first two direction columns.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from salm_desktop.core.model import Geometry, IntensityMap, Series, Skipped, Sample, SourceRef, StoredFormat, short_hash
from salm_desktop.core.studies.limits import DEFLATE_MAX_RATIO, PixelReadError, human_bytes, one_line, over_memory_limit

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


class _VolumeCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._array: np.ndarray | None = None
        self._lock = threading.Lock()

    def get(self) -> np.ndarray:
        if self._array is None:
            with self._lock:
                if self._array is None:
                    import SimpleITK as sitk

                    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints C++ warnings to stderr
                    try:
                        self._array = sitk.GetArrayFromImage(sitk.ReadImage(str(self.path)))  # (z, y, x)
                    except MemoryError:
                        raise PixelReadError(self.path, "not enough memory to read the volume") from None
                    except Exception as exc:  # SimpleITK raises RuntimeError with a multi-line C++ trace
                        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                        raise PixelReadError(self.path, f"cannot read the volume ({lines[-1][:200] if lines else type(exc).__name__})") from None
        return self._array

    def _checked(self, array: np.ndarray) -> np.ndarray:
        out = np.array(array, dtype=np.float32)  # a copy: callers may modify it
        if not np.isfinite(out).all():
            raise PixelReadError(self.path, "volume contains NaN or infinite values")
        return out

    def reader(self, k: int) -> Callable[[], np.ndarray]:
        def read() -> np.ndarray:
            return self._checked(self.get()[k])

        return read


_HEADER_BYTES = 1 << 16


def _text_header(path: Path) -> tuple[dict[str, str], int] | None:
    """Fields of an NRRD ("key: value") or MetaImage ("Key = Value") header and where its data start."""
    with open(path, "rb") as fp:
        head = fp.read(_HEADER_BYTES)
    fields: dict[str, str] = {}
    nrrd = head.startswith(b"NRRD")
    position = 0
    for raw in head.split(b"\n"):
        end = position + len(raw) + 1
        line = raw.decode("latin-1").strip()
        position = end
        if nrrd:
            if not line:  # a blank line ends an NRRD header
                return fields, min(position, len(head))
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower().replace(" ", "")] = value.strip().lstrip("=").strip()
        else:
            key, _, value = line.partition("=")
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":  # the last MetaImage field; local data follow it
                return fields, min(position, len(head))
    return (fields, len(head)) if not nrrd else None


def _implausible(path: Path, voxels: int, itemsize: int) -> str | None:
    """Why the header cannot describe the data present (no pixel byte is read)."""
    parsed = _text_header(path)
    if parsed is None:
        return None  # header longer than we parse: SimpleITK's own checks apply
    fields, offset = parsed
    claimed = voxels * itemsize
    if path.name.lower().endswith((".nrrd", ".nhdr")):
        encoding = fields.get("encoding", "raw").lower()
        detached = fields.get("datafile") or fields.get("data file")
        compressed = encoding in ("gzip", "gz", "bzip2", "bz2")
        text = encoding in ("ascii", "text", "txt", "hex")
    else:
        encoding = "zlib" if fields.get("compresseddata", "false").lower() == "true" else "raw"
        detached = fields.get("elementdatafile")
        detached = None if detached is None or detached.upper() == "LOCAL" else detached
        compressed, text = encoding == "zlib", False
    if detached:
        if detached.upper().startswith("LIST") or "%" in detached or " " in detached.strip():
            return None  # several data files: not checked here
        data = (path.parent / detached)
        if not data.is_file():
            return f"the header's data file {detached} is missing or not a regular file"
        available = data.stat().st_size
    else:
        available = path.stat().st_size - offset
    if encoding == "bzip2" or encoding == "bz2":
        return None  # bzip2 has no useful expansion bound; the memory limit still applies
    if compressed:
        if claimed > DEFLATE_MAX_RATIO * max(available, 1):
            return (f"header claims {human_bytes(claimed)} of data, impossible for {human_bytes(max(available, 0))} "
                    "of compressed data")
    elif text:
        if voxels > max(available, 0):
            return f"truncated file: header claims {voxels} values in {max(available, 0)} bytes of text"
    elif claimed > available:
        return f"truncated file: header claims {claimed} bytes of data, only {max(available, 0)} present"
    return None


_SITK_DTYPE = {
    "8-bit unsigned integer": "uint8", "8-bit signed integer": "int8",
    "16-bit unsigned integer": "uint16", "16-bit signed integer": "int16",
    "32-bit unsigned integer": "uint32", "32-bit signed integer": "int32",
    "64-bit unsigned integer": "uint64", "64-bit signed integer": "int64",
    "32-bit float": "float32", "64-bit float": "float64",
}


def load_volume(path: Path, root: Path) -> Series | Skipped:
    import SimpleITK as sitk

    from salm_desktop.core.studies.lazy import LazyIntensitySeries

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return Skipped(path, f"unreadable volume file ({lines[-1].strip()[:200] if lines else 'SimpleITK error'})")
    size = tuple(int(v) for v in reader.GetSize())  # (x, y, z)
    if reader.GetNumberOfComponents() != 1:
        return Skipped(path, f"multi-component volume ({reader.GetNumberOfComponents()} components) is not supported")
    if len(size) not in (2, 3):
        return Skipped(path, f"{len(size)}D volume is not supported (2D and 3D are)")
    dtype = _SITK_DTYPE.get(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    if dtype is None:
        return Skipped(path, f"pixel type {sitk.GetPixelIDValueAsString(reader.GetPixelID())} is not supported")
    if any(v <= 0 for v in size):
        return Skipped(path, f"empty volume (size {size})")
    voxels = int(np.prod(size, dtype=object))
    itemsize = np.dtype(dtype).itemsize
    try:
        problem = _implausible(path, voxels, itemsize)
    except OSError as exc:
        problem = f"unreadable volume file ({one_line(exc)})"
    problem = problem or over_memory_limit(voxels, 2 * itemsize)
    if problem:
        return Skipped(path, f"volume {'x'.join(map(str, size))} {dtype}: {problem}")
    spacing = tuple(float(v) for v in reader.GetSpacing())
    if not all(np.isfinite(spacing)) or not np.all(np.isfinite(reader.GetOrigin())) or not np.all(np.isfinite(reader.GetDirection())):
        return Skipped(path, "volume geometry (spacing, origin or direction) is not finite")
    origin = np.asarray(reader.GetOrigin(), dtype=np.float64)
    dim = len(size)
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)
    nz = size[2] if dim == 3 else 1
    cache = _VolumeCache(path)
    rel = path.name
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        pass
    samples: list[Sample] = []
    orientation = None
    if dim == 3:
        orientation = tuple(float(v) for v in np.concatenate([direction[:, 0], direction[:, 1]]))
    for k in range(nz):
        position = None
        if dim == 3:
            position = tuple(float(v) for v in origin + k * spacing[2] * direction[:, 2])
        samples.append(
            Sample(
                key=f"z{k:04d}",
                shape=(size[1], size[0]),
                reader=cache.reader(k) if dim == 3 else (lambda c=cache: c._checked(c.get())),
                stored=StoredFormat.for_dtype(dtype),
                source=SourceRef(path, frame=k, key=None, index=(k,)),
                geometry=Geometry(spacing=(spacing[1], spacing[0]), position=position, orientation=orientation, slice_index=k),
            )
        )
    meta: dict[str, Any] = {
        "volume_shape": tuple(reversed(size)),
        "spacing_xyz": spacing,
        "origin": tuple(float(v) for v in origin),
        "direction": tuple(float(v) for v in direction.ravel()),
        "dims": (nz,),
        "slice_spacing": spacing[2] if dim == 3 else None,
        "intensity_unit": "",
    }
    series = LazyIntensitySeries(
        id=short_hash("volume", rel),
        kind="nrrd",
        modality="OT",
        samples=samples,
        intensity=IntensityMap.for_uint8() if dtype == "uint8" else None,
        root=root,
        description=path.name,
        warnings=[],
        meta=meta,
    )
    if dtype != "uint8":
        from salm_desktop.core.studies.lazy import robust_intensity

        series.set_intensity_factory(robust_intensity)
    return series
