"""DICOM series: scanned frame headers grouped into sorted :class:`Series` with lazy pixel readers.

Grouping key: SeriesInstanceUID, ImageType, Rows/Columns, samples per pixel, then
ImageOrientationPatient (rounded to 1e-4); each orientation group is sorted by
:mod:`dicom_geometry`. A sample's reader decodes one frame with pydicom and applies the file's
modality transform (Modality LUT Sequence, else RescaleSlope/RescaleIntercept) with
``pydicom.pixels.apply_modality_lut``.
"""

from __future__ import annotations

import warnings as _warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from salm_desktop.core.model import Geometry, IntensityMap, Sample, Series, Skipped, SourceRef, StoredFormat, short_hash
from salm_desktop.core.studies.dicom_checks import first_item, one_line
from salm_desktop.core.studies.dicom_geometry import Volume, build_volume, instance_key
from salm_desktop.core.studies.dicom_headers import FrameHeader
from salm_desktop.core.studies.lazy import LazyIntensitySeries, robust_intensity
from salm_desktop.core.studies.limits import PixelReadError


def group_series(headers: list[FrameHeader], skipped: list[Skipped] | None = None) -> list[Series]:
    """Group scanned images into sorted Series (see module docstring).

    The same SOPInstanceUID found in several files (copies, or one image in several encodings) is
    loaded once; the other files are appended to ``skipped`` and counted in a series warning.
    """
    seen: dict[tuple, FrameHeader] = {}
    duplicates: dict[str, int] = defaultdict(int)
    duplicate_files: dict[Path, Path] = {}
    for h in headers:
        key = (h.sop_uid or str(h.path), h.frame, h.tile)
        if key in seen and h.sop_uid:
            if h.path != seen[key].path and h.path not in duplicate_files:
                duplicates[h.series_uid] += 1
                duplicate_files[h.path] = seen[key].path
            continue
        seen[key] = h
    if skipped is not None:
        for dup, original in duplicate_files.items():
            skipped.append(Skipped(dup, f"duplicate of {original.name} (same SOPInstanceUID); loaded once"))

    by_series: dict[tuple, list[FrameHeader]] = defaultdict(list)
    for h in seen.values():
        uid = h.series_uid or f"no-series-uid:{h.path.parent}"
        by_series[(uid, h.image_type, h.rows, h.cols, h.samples_per_pixel)].append(h)

    out: list[Series] = []
    for (uid, image_type, rows, cols, spp), group in sorted(by_series.items(), key=lambda kv: _series_sort_key(kv[1])):
        by_iop: dict[Any, list[FrameHeader]] = defaultdict(list)
        for h in group:
            by_iop[h.iop_key].append(h)
        base_key = (uid, "\\".join(image_type), rows, cols, spp)
        volumes: list[Volume] = []
        if len(by_iop) > 1 and all(len(g) == 1 for g in by_iop.values()):
            ordered = sorted(group, key=instance_key)
            vol = Volume(ordered, base_key, None, [(i,) for i in range(len(ordered))])
            vol.warnings.append(
                f"mixed orientation: {len(ordered)} images with different orientations kept as independent 2D images (not a volume)"
            )
            volumes.append(vol)
        else:
            for iop_key, sub in sorted(by_iop.items(), key=lambda kv: min(instance_key(h) for h in kv[1])):
                key = base_key + ((str(iop_key),) if len(by_iop) > 1 else ())
                for vol in build_volume(sub, key):
                    if len(by_iop) > 1:
                        vol.warnings.insert(0, f"mixed orientation: series split into {len(by_iop)} parts by ImageOrientationPatient")
                    volumes.append(vol)
        for vol in volumes:
            out.append(_make_series(vol, uid, duplicates.get(uid, 0)))
    return out


def _series_sort_key(frames: list[FrameHeader]) -> tuple:
    h = min(frames, key=lambda f: str(f.path))
    return (str(h.root), h.study_uid, h.series_uid, str(h.path))


def _make_series(vol: Volume, uid: str, duplicates: int) -> Series:
    frames = vol.frames
    first = frames[0]
    warnings_: list[str] = []
    file_warnings = sorted({h.file_warning for h in frames if h.file_warning})
    warnings_.extend(file_warnings)
    warnings_.extend(vol.warnings)
    if {"LOCALIZER", "SCOUT"} & set(first.image_type):
        warnings_.append("localizer/scout images (not diagnostic slices)")
    if duplicates:
        warnings_.append(f"{duplicates} duplicate instance(s) (same SOPInstanceUID as a loaded file) ignored")
    if any(h.spacing is None for h in frames):
        warnings_.append("no PixelSpacing: spacing assumed 1 mm")
    photometrics = sorted({h.photometric for h in frames})
    if "MONOCHROME1" in photometrics:
        warnings_.append("MONOCHROME1: native values are stored values (low = white); the viewer inverts them")
    if first.samples_per_pixel > 1:
        warnings_.append(f"colour image ({first.photometric}): samples are (rows, columns, {first.samples_per_pixel})")
    if first.mosaic is not None:
        n_tiles = sum(1 for h in frames if h.path == first.path)
        warnings_.append(
            f"Siemens mosaic: {n_tiles} slices of {first.rows}x{first.cols} cut from each {first.mosaic[0]}x{first.mosaic[0]} tile grid"
        )
    if vol.dims and len(vol.dims) == 1 and vol.dims[0] > 1 and len({h.slope for h in frames} | set()) > 1:
        warnings_.append("rescale slope differs between slices")

    shape: tuple[int, ...] = (first.rows, first.cols)
    if first.samples_per_pixel > 1:
        shape = shape + (first.samples_per_pixel,)
    samples: list[Sample] = []
    for h, idx in zip(frames, vol.index):
        if vol.dims is not None and len(vol.dims) == 2:
            key = f"t{idx[0]:04d}/z{idx[1]:04d}"
        else:
            key = f"z{idx[0]:04d}"
        meta: dict[str, Any] = {"sop_instance_uid": h.sop_uid, "instance_number": h.instance_number}
        if h.tile is not None:
            meta["mosaic_tile"] = h.tile
            meta["mosaic_layout"] = h.mosaic
        samples.append(
            Sample(
                key=key,
                shape=shape,
                reader=make_reader(h),
                stored=_stored_format(h),
                source=SourceRef(h.path, frame=h.frame, key=None, index=tuple(idx)),
                geometry=Geometry(
                    spacing=tuple(h.spacing) if h.spacing else (1.0, 1.0),
                    position=h.ipp,
                    orientation=h.iop,
                ),
                meta=meta,
            )
        )

    is_ct = first.modality.upper() == "CT" and first.has_rescale and first.rescale_type in ("", "HU")
    unsigned8 = first.bits_allocated == 8 and not first.signed and first.slope == 1.0 and first.intercept == 0.0
    intensity: IntensityMap | None = None
    if unsigned8 and not is_ct:
        intensity = IntensityMap.for_uint8()
    else:
        # the budget is a fraction of the window the reader uses: the file's own window first
        intensity, window_note = _reader_window(first, "HU" if is_ct else "")
        if window_note:
            warnings_.append(window_note)
        if intensity is None and is_ct:
            intensity = IntensityMap.for_ct()  # its name says "(default)"; the report shows it
    split = vol.split_key
    series = LazyIntensitySeries(
        id=short_hash(*split),
        kind="dicom",
        modality=first.modality,
        samples=samples,
        intensity=intensity,
        root=first.root,
        description=first.description,
        warnings=warnings_,
        meta={
            "series_uid": uid if not uid.startswith("no-series-uid:") else "",
            "study_uid": first.study_uid,
            "frame_of_reference_uid": first.for_uid,
            "sop_class_uid": first.sop_class,
            "transfer_syntax": first.transfer_syntax,
            "transfer_syntaxes": sorted({h.transfer_syntax for h in frames}),
            "dims": vol.dims,
            "slice_spacing": vol.slice_spacing,
            "slice_thickness": first.slice_thickness,
            "photometric": photometrics[0] if len(photometrics) == 1 else photometrics,
            "image_type": list(first.image_type),
            "intensity_unit": "HU" if is_ct else "",
        },
    )
    if intensity is None:
        series.set_intensity_factory(robust_intensity)
    return series


def _reader_window(first: FrameHeader, unit: str) -> tuple[IntensityMap | None, str | None]:
    """The file's own display window (first WindowCenter/WindowWidth value) as an IntensityMap.

    Returns ``(None, None)`` when the file has no window, ``(None, reason)`` when its window cannot
    be used (width 0, not a number): the caller then uses the modality default and says so.
    """
    try:
        import pydicom

        ds = pydicom.dcmread(first.path, stop_before_pixels=True, force=True,
                             specific_tags=["WindowCenter", "WindowWidth", "SharedFunctionalGroupsSequence"])
    except Exception:  # noqa: BLE001 - the header was read before; a window is optional
        return None, None
    holder: Any = ds
    if "WindowWidth" not in ds:
        voi = first_item(first_item(ds, "SharedFunctionalGroupsSequence"), "FrameVOILUTSequence")
        holder = voi if voi is not None else ds
    center, width = holder.get("WindowCenter"), holder.get("WindowWidth")
    if center is None and width is None:
        return None, None

    def first_value(v: Any) -> Any:
        return v[0] if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else v

    try:
        return IntensityMap.for_window(first_value(center), first_value(width), unit), None
    except ValueError as exc:
        fallback = "the CT soft-tissue window C40/W400" if unit == "HU" else "a percentile range of the pixels"
        return None, f"{first.path.name}: window tags not usable ({exc}); the budget uses {fallback} instead"


# --------------------------------------------------------------------------------------------
# Pixel readers


def _decode(path: Path, frame: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return pixel_array(str(path), index=frame)


def _modality_transform(h: FrameHeader) -> Any:
    """A dataset holding only the frame's modality transform, as ``apply_modality_lut`` reads it."""
    if h.modality_lut is not None:
        return h.modality_lut
    from pydicom.dataset import Dataset

    ds = Dataset()
    if h.slope != 1.0 or h.intercept != 0.0:  # no tags: the stored values are returned as they are
        ds.RescaleSlope, ds.RescaleIntercept = h.slope, h.intercept
    return ds


def make_reader(h: FrameHeader) -> Callable[[], np.ndarray]:
    path, frame, slope, intercept, mosaic, tile = h.path, h.frame, h.slope, h.intercept, h.mosaic, h.tile

    def read() -> np.ndarray:
        from pydicom.pixels import apply_modality_lut

        where = f" frame {frame}" if frame is not None else ""
        try:
            stored = _decode(path, frame)
        except MemoryError:
            raise PixelReadError(path, f"not enough memory to decode pixel data{where}") from None
        except Exception as exc:  # decoder plugins raise many types; name the file instead
            raise PixelReadError(path, f"cannot decode pixel data{where} ({one_line(exc)})") from None
        if stored.shape[:2] != (h.rows * (mosaic[0] if mosaic is not None and tile is not None else 1),
                                h.cols * (mosaic[0] if mosaic is not None and tile is not None else 1)):
            raise PixelReadError(path, f"decoded pixel data{where} has shape {stored.shape}, the header says {h.rows}x{h.cols}")
        if mosaic is not None and tile is not None:
            tiles, tr, tc = mosaic
            r0, c0 = (tile // tiles) * tr, (tile % tiles) * tc
            stored = stored[r0 : r0 + tr, c0 : c0 + tc]
        native = apply_modality_lut(stored, _modality_transform(h)).astype(np.float32)
        if not np.isfinite(native).all():
            raise PixelReadError(path, f"pixel values{where} are not finite after rescale (RescaleSlope {slope:g}, RescaleIntercept {intercept:g})")
        return native

    return read


def _stored_format(h: FrameHeader) -> StoredFormat:
    ba = h.bits_allocated
    if ba <= 8:
        dtype = "int8" if h.signed else "uint8"
    elif ba <= 16:
        dtype = "int16" if h.signed else "uint16"
    else:
        dtype = "int32" if h.signed else "uint32"
    return StoredFormat.for_dtype(dtype, h.slope, h.intercept, bits_stored=h.bits_stored)
