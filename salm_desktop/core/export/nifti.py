"""NIfTI writer: the source header (affine, sform/qform codes, data type, byte order, scl_slope/inter)
is kept; only the stored voxel values change. Written with nibabel."""

from __future__ import annotations


import nibabel as nib
import numpy as np

from salm_desktop.core.export.common import (ExportError, Observer, ProtectedFn, WriteContext, WriteResult,
                                             iter_source_files, read_members, reread_failure, stored_dtype_array)
from salm_desktop.core.model import Sample, Series, StoredFormat


def _slicer(sample: Sample, volume_shape: tuple[int, ...]) -> tuple:
    """Index into the (unscaled) volume array where this sample's voxels live.

    Convention of the loader: 2D samples are slices along the third axis, ``source.index`` is
    ``(k,)`` for a 3D volume and ``(t, k)`` for 4D; a sample of the volume's full shape is the volume.
    """
    shape = tuple(sample.shape)
    ndim = len(volume_shape)
    if shape == tuple(volume_shape):
        return (Ellipsis,)
    index = tuple(int(i) for i in (sample.source.index or ()))
    if not index and sample.source.frame is not None:
        index = (int(sample.source.frame),)
    if len(shape) == 2 and ndim >= 2:
        if ndim == 2:
            return (slice(None), slice(None))
        if len(index) == 1:  # (k,) -> [:, :, k, 0, ...]
            extra = (index[0],)
        elif len(index) == 2:  # (t, k) -> [:, :, k, t, 0, ...]
            extra = (index[1], index[0])
        else:
            extra = ()
        if extra and len(extra) <= ndim - 2:
            return (slice(None), slice(None)) + extra + (0,) * (ndim - 2 - len(extra))
    if len(shape) == 3 and ndim >= 3 and len(index) == 1 and shape == tuple(volume_shape[:3]):
        return (slice(None), slice(None), slice(None), index[0]) + (0,) * (ndim - 4)
    raise ExportError(f"cannot place a sample of shape {shape} (index {index}) in a volume of shape {tuple(volume_shape)}")


def _place(raw: np.ndarray, sample: Sample, stored: np.ndarray) -> None:
    where = _slicer(sample, raw.shape)
    target = raw[where]
    if target.shape == stored.shape:
        raw[where] = stored
    elif target.shape == stored.T.shape and sample.meta.get("transposed", False):
        raw[where] = stored.T
    else:
        raise ExportError(f"sample shape {stored.shape} does not fit the volume slice {target.shape}")


TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")


def _clear_text_fields(header) -> None:
    for name in TEXT_FIELDS:
        if name in header:
            header[name] = b""
    extensions = getattr(header, "extensions", None)
    if extensions is not None:
        extensions.clear()


def write_nifti_series(series: Series, protected: ProtectedFn, ctx: WriteContext, *, observer: Observer | None = None,
                       done_offset: int = 0, total: int = 0) -> WriteResult:
    """De-identifying (``ctx.deidentifier``): the free-text header fields (descrip, aux_file, intent_name, db_name) are emptied
    and header extensions (which may hold a whole DICOM header) are dropped; geometry stays."""
    result, deidentify = WriteResult(), ctx.deidentifier is not None
    for path, members in iter_source_files(series, ctx.progress, done_offset, total, "volume"):
        try:
            img = nib.load(str(path))
            raw = np.array(img.dataobj.get_unscaled())  # stored values, a writable copy
            originals, natives = read_members(members, protected)
        except Exception as exc:  # noqa: BLE001 - a file that changed under us: skip it with the reason
            result.skipped.append(reread_failure(path, exc))
            continue
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
        # Quantize with the file's own scaling (what the file can really hold), whatever the loader assumed.
        file_format = StoredFormat.for_dtype(raw.dtype.newbyteorder("="), slope, inter)
        try:
            for index, sample in members:
                native = natives[index]
                if native is None:
                    source = originals[index]
                else:
                    stored_dtype_array(sample, native)  # shape check
                    source = np.asarray(native, dtype=np.float64)
                stored = file_format.to_stored(source).astype(raw.dtype, copy=False)
                _place(raw, sample, stored)
                if observer is not None:
                    observer(index, originals[index], file_format.to_native(stored))
        except ExportError as exc:
            raise ExportError(f"{path}: {exc}") from None

        header = img.header.copy()
        if deidentify:
            _clear_text_fields(header)
        new = type(img)(raw, None, header=header)
        if not (slope == 1.0 and inter == 0.0):
            new.header.set_slope_inter(slope, inter)
        dest = ctx.out_root / ctx.layout.relative(path, series.root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        nib.save(new, str(dest))
        # nibabel may choose its own scaling for some data types: verify that the file holds our values.
        check = nib.load(str(dest))
        same_scale = np.isclose(float(check.dataobj.slope), slope) and np.isclose(float(check.dataobj.inter), inter)
        if not same_scale or not np.array_equal(np.asarray(check.dataobj.get_unscaled()), raw) or not np.allclose(check.affine, img.affine):
            raise ExportError(f"{dest}: nibabel did not write the stored values back unchanged")
        result.files.append(dest)
    return result
