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

                    self._array = sitk.GetArrayFromImage(sitk.ReadImage(str(self.path)))  # (z, y, x)
        return self._array

    def reader(self, k: int) -> Callable[[], np.ndarray]:
        def read() -> np.ndarray:
            return np.array(self.get()[k], dtype=np.float32)  # a copy: callers may modify it

        return read


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
    spacing = tuple(float(v) for v in reader.GetSpacing())
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
                reader=cache.reader(k) if dim == 3 else (lambda c=cache: np.array(c.get(), dtype=np.float32)),
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
        from salm_desktop.core.studies.dicom import _sample_values

        series.set_intensity_factory(lambda s: IntensityMap.robust(_sample_values(s.samples)))
    return series
