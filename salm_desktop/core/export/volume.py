"""Writer for other volume files the loader reads with SimpleITK (NRRD, MHA, ...): same geometry
(origin, spacing, direction), same pixel type, same metadata keys, same compression."""

from __future__ import annotations


import SimpleITK as sitk

from salm_desktop.core.export.common import (ExportError, Observer, ProtectedFn, WriteContext, WriteResult,
                                             iter_source_files, read_members, reread_failure, stored_dtype_array)
from salm_desktop.core.model import Series


# Metadata keys that describe the grid and the encoding only (what a de-identified copy keeps).
GEOMETRY_KEYS = {"ITK_InputFilterName", "NRRD_space", "NRRD_kinds", "NRRD_encoding", "NRRD_centerings", "NRRD_thicknesses",
                 "NRRD_measurement frame", "ITK_original_direction", "ITK_original_spacing",
                 "ElementSpacing", "AnatomicalOrientation"}


def _is_geometry_key(key: str) -> bool:
    return key in GEOMETRY_KEYS or key.startswith(("NRRD_space", "NRRD_kinds", "NRRD_thicknesses", "NRRD_centerings"))


def write_volume_series(series: Series, protected: ProtectedFn, ctx: WriteContext, *, observer: Observer | None = None,
                        done_offset: int = 0, total: int = 0) -> WriteResult:
    """De-identifying (``ctx.deidentifier``): only the geometry and encoding keys of the source metadata are copied (free-text
    keys such as NRRD "content" or vendor keys may carry names)."""
    result, deidentify = WriteResult(), ctx.deidentifier is not None
    for path, members in iter_source_files(series, ctx.progress, done_offset, total, "volume"):
        try:
            image = sitk.ReadImage(str(path))
            array = sitk.GetArrayFromImage(image).copy()  # (z, y, x)
            originals, natives = read_members(members, protected)
        except (OSError, RuntimeError) as exc:
            result.skipped.append(reread_failure(path, exc))
            continue
        seen = []
        for index, sample in members:
            native = natives[index]
            stored = sample.stored.to_stored(originals[index]) if native is None else stored_dtype_array(sample, native)
            stored = stored.astype(array.dtype, copy=False)
            if tuple(sample.shape) == array.shape:
                array[...] = stored
            elif array.ndim == 3 and sample.source.frame is not None and array[int(sample.source.frame)].shape == stored.shape:
                array[int(sample.source.frame)] = stored
            else:
                raise ExportError(f"{path}: cannot place a sample of shape {stored.shape} in a volume of shape {array.shape}")
            seen.append((index, originals[index], sample.stored.to_native(stored)))
        new = sitk.GetImageFromArray(array)
        new.CopyInformation(image)
        for key in image.GetMetaDataKeys():
            if deidentify and not _is_geometry_key(key):
                continue
            new.SetMetaData(key, image.GetMetaData(key))
        dest = ctx.out_root / ctx.layout.relative(path, series.root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        compress = "gzip" in image.GetMetaData("NRRD_encoding").lower() if image.HasMetaDataKey("NRRD_encoding") else path.suffix == ".gz"
        try:
            sitk.WriteImage(new, str(dest), useCompression=bool(compress))
        except RuntimeError as exc:
            raise OSError(f"SimpleITK could not write {dest.name}: {str(exc).strip().splitlines()[-1]}") from None
        result.files.append(dest)
        if observer is not None:
            for item in seen:
                observer(*item)
    return result
