"""DICOM header scan: one file's header becomes the 2D images it holds (:class:`FrameHeader`).

A single-frame file gives one, a multi-frame object one per frame (its functional groups give each
frame's position, spacing and rescale), a Siemens mosaic one per tile. Pixels are not read; the
checks before trusting a header are in :mod:`dicom_checks`.
"""

from __future__ import annotations

import math
import struct
import warnings as _warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from salm_desktop.core.model import Skipped
from salm_desktop.core.studies.dicom_checks import (
    PIXEL_TAGS,
    PixelModule,
    first_item,
    functional_item,
    looks_like_dicom,
    non_image_kind,
    one_line,
    pixel_element_problem,
    pixel_module,
    size_problem,
    tag_float,
    tag_floats,
    tag_int,
    uid_name,
)
from salm_desktop.core.studies.limits import MAX_NATIVE_MAGNITUDE


@dataclass
class FrameHeader:
    """One 2D image found while scanning: a single-frame file, one frame, or one mosaic tile."""

    path: Path
    root: Path
    frame: int | None  # frame index in a multi-frame object
    tile: int | None  # Siemens mosaic tile index
    sop_class: str
    sop_uid: str
    series_uid: str
    study_uid: str
    for_uid: str
    modality: str
    description: str
    image_type: tuple[str, ...]
    rows: int
    cols: int
    ipp: tuple[float, float, float] | None
    iop: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    slice_thickness: float | None
    spacing_between: float | None
    instance_number: int
    acquisition_number: int | None
    temporal_position: int | None
    trigger_time: float | None
    acquisition_time: str
    bits_allocated: int
    bits_stored: int
    signed: bool
    slope: float
    intercept: float
    rescale_type: str
    photometric: str
    samples_per_pixel: int
    n_frames: int
    transfer_syntax: str
    has_rescale: bool
    mosaic: tuple[int, int, int] | None = None  # (tiles per side, tile rows, tile cols)
    file_warning: str | None = None
    # the file's Modality LUT Sequence in a small dataset of its own (None: RescaleSlope/Intercept apply)
    modality_lut: Any = None

    @property
    def iop_key(self) -> tuple[float, ...] | None:
        return None if self.iop is None else tuple(round(v, 4) + 0.0 for v in self.iop)

    @property
    def normal(self) -> np.ndarray | None:
        if self.iop is None:
            return None
        r = np.asarray(self.iop[:3], dtype=np.float64)
        c = np.asarray(self.iop[3:6], dtype=np.float64)
        n = np.cross(r, c)
        norm = np.linalg.norm(n)
        return None if norm < 1e-6 else n / norm


def read_headers(path: Path, root: Path) -> list[FrameHeader] | Skipped:
    """Read one file's header; return its 2D images, or why it is skipped."""
    if not looks_like_dicom(path):
        return Skipped(path, "not a DICOM file (no DICOM header found)")
    read = _read_header_only(path)
    if isinstance(read, Skipped):
        return read
    ds, size, pixel_pos, tail = read
    sop_class, modality = _sop_class(ds), str(ds.get("Modality", "") or "").strip()
    problem = _not_an_image(ds, sop_class, modality)
    if problem is None:
        found = _pixel_tag(tail)
        if found is None:
            problem = _missing_pixels(ds, sop_class, modality)
    if problem is not None:
        return Skipped(path, problem)
    tag, little = found
    pixels = pixel_module(ds)
    if isinstance(pixels, str):
        return Skipped(path, pixels)
    problem = size_problem(ds, pixels, size) or pixel_element_problem(path, pixels, tag, little, tail, size, pixel_pos)
    if problem is not None:
        return Skipped(path, problem)
    if tag != (0x7FE0, 0x0010):
        return Skipped(path, "float pixel data (parametric map) is not supported")
    return _frame_headers(ds, path, root, sop_class, modality or "OT", pixels)


def _read_header_only(path: Path) -> tuple[Any, int, int, bytes] | Skipped:
    """The dataset up to its pixel data, the file size, where pixel data starts and its first 12 bytes."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        size = path.stat().st_size
        with open(path, "rb") as fp, _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            pixel_pos = fp.tell()
            tail = fp.read(12)
    except (InvalidDicomError, EOFError, OSError, ValueError, struct.error, KeyError, TypeError, AttributeError, IndexError) as exc:
        return Skipped(path, f"unreadable DICOM file (truncated or corrupt header: {one_line(exc)})")
    except Exception as exc:  # pydicom raises many types on garbage; none may abort the scan
        return Skipped(path, f"unreadable DICOM file ({type(exc).__name__}: {one_line(exc)})")
    return ds, size, pixel_pos, tail


def _sop_class(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")


def _not_an_image(ds: Any, sop_class: str, modality: str) -> str | None:
    if len(ds) == 0 and not sop_class:
        return "truncated or empty DICOM file (no data elements)"
    kind = non_image_kind(sop_class, modality)
    if kind is not None:
        name = uid_name(sop_class) if sop_class else f"Modality {modality}"
        return f"DICOM {kind} ({name}) is not an image series"
    return None


def _pixel_tag(tail: bytes) -> tuple[tuple[int, int], bool] | None:
    """The pixel data tag right after the header (stop_before_pixels leaves the file there), and its endianness."""
    if len(tail) >= 4:
        for fmt in ("<HH", ">HH"):
            tag = struct.unpack(fmt, tail[:4])
            if tag in PIXEL_TAGS:
                return tag, fmt == "<HH"
    return None


def _missing_pixels(ds: Any, sop_class: str, modality: str) -> str:
    what = uid_name(sop_class) if sop_class else "unknown SOP class"
    if "Rows" not in ds or "Columns" not in ds:
        if "Image" in what or modality.upper() in ("CT", "MR", "PT", "CR", "DX", "US", "MG", "NM", "XA", "OT"):
            return f"truncated or incomplete DICOM file ({what} without Rows/Columns and pixel data)"
    return f"DICOM object without pixel data ({what}) is not an image"


def _image_type(ds: Any) -> tuple[str, ...]:
    if isinstance(ds.get("ImageType"), str):
        return (str(ds.ImageType).upper(),)
    return tuple(str(v).upper() for v in (ds.get("ImageType") or ()) if v is not None)


def _common_fields(ds: Any, path: Path, root: Path, sop_class: str, modality: str, px: PixelModule) -> dict[str, Any]:
    """The FrameHeader fields every image of the file shares."""
    return dict(
        path=path,
        root=root,
        sop_class=sop_class,
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        for_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        modality=modality,
        description=str(ds.get("SeriesDescription", "") or ""),
        image_type=_image_type(ds),
        rows=px.rows,
        cols=px.cols,
        instance_number=tag_int(ds.get("InstanceNumber")) or 0,
        acquisition_number=tag_int(ds.get("AcquisitionNumber")),
        temporal_position=tag_int(ds.get("TemporalPositionIdentifier")),
        trigger_time=tag_float(ds.get("TriggerTime")),
        acquisition_time=str(ds.get("AcquisitionTime", "") or ""),
        bits_allocated=px.bits_allocated,
        bits_stored=px.bits_stored,
        signed=bool(tag_int(ds.get("PixelRepresentation")) or 0),
        rescale_type=str(ds.get("RescaleType", "") or "").upper(),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper(),
        samples_per_pixel=px.samples_per_pixel,
        n_frames=px.n_frames,
        transfer_syntax=px.transfer_syntax,
        slice_thickness=tag_float(ds.get("SliceThickness")),
        spacing_between=tag_float(ds.get("SpacingBetweenSlices")),
    )


def _rescale(item: Any) -> tuple[float, float, bool]:
    """(slope, intercept, present) of a dataset or Pixel Value Transformation item; slope 0 reads as 1."""
    slope = tag_float(item.get("RescaleSlope")) if item is not None else None
    intercept = tag_float(item.get("RescaleIntercept")) if item is not None else None
    has = slope is not None or intercept is not None
    return (slope if slope not in (None, 0.0) else 1.0), (intercept or 0.0), has


def _frame_headers(ds: Any, path: Path, root: Path, sop_class: str, modality: str, px: PixelModule) -> list[FrameHeader] | Skipped:
    base = _common_fields(ds, path, root, sop_class, modality, px)
    top_slope, top_intercept, top_has = _rescale(ds)
    lut = None
    if ds.get("ModalityLUTSequence"):
        linear = _linear_modality_lut(ds, px.bits_stored, base["signed"])
        if isinstance(linear, str):
            return Skipped(path, linear)
        lut, top_slope, top_intercept, top_has = linear[0], linear[1], linear[2], True
    largest = 2.0 ** min(px.bits_stored, 32)
    if abs(top_slope) * largest + abs(top_intercept) > MAX_NATIVE_MAGNITUDE:
        return Skipped(path, f"implausible rescale: RescaleSlope {top_slope:g} and RescaleIntercept {top_intercept:g} "
                             f"give values beyond +/-{MAX_NATIVE_MAGNITUDE:g}")
    top_spacing = tag_floats(ds.get("PixelSpacing"), 2) or tag_floats(ds.get("ImagerPixelSpacing"), 2)
    top_ipp = tag_floats(ds.get("ImagePositionPatient"), 3)
    top_iop = tag_floats(ds.get("ImageOrientationPatient"), 6)
    top = dict(slope=top_slope, intercept=top_intercept, has_rescale=top_has, modality_lut=lut)

    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence")
    if px.n_frames > 1 or shared is not None or per_frame_seq is not None:
        return _functional_frames(ds, shared, per_frame_seq, px.n_frames, base, top, top_ipp, top_iop, top_spacing)

    image_type = base["image_type"]
    mosaic = _mosaic_layout(ds, px.rows, px.cols) if "MOSAIC" in image_type else None
    if mosaic is not None:
        n_tiles, tiles, tile_rows, tile_cols, first_pos, normal, step = mosaic
        frames = []
        for k in range(n_tiles):
            ipp = tuple(float(v) for v in (np.asarray(first_pos) + k * step * np.asarray(normal)))
            fh = FrameHeader(frame=None, tile=k, ipp=ipp, iop=top_iop, spacing=top_spacing,
                             mosaic=(tiles, tile_rows, tile_cols), **top, **base)
            fh.rows, fh.cols = tile_rows, tile_cols
            frames.append(fh)
        return frames

    warn = None
    if "MOSAIC" in image_type:
        warn = "Siemens mosaic not split into slices (no readable mosaic header)"
    return [FrameHeader(frame=None, tile=None, ipp=top_ipp, iop=top_iop, spacing=top_spacing, file_warning=warn, **top, **base)]


def _functional_frames(
    ds: Any, shared: Any, per_frame_seq: Any, n_frames: int, base: dict, top: dict,
    top_ipp: Any, top_iop: Any, top_spacing: Any,
) -> list[FrameHeader]:
    """One header per frame of a multi-frame object, from its per-frame and shared functional groups."""
    frames: list[FrameHeader] = []
    has_per_frame = per_frame_seq is not None and len(per_frame_seq) == n_frames
    for i in range(n_frames):
        pf = per_frame_seq[i] if has_per_frame else None
        pos = functional_item(ds, shared, pf, "PlanePositionSequence")
        ori = functional_item(ds, shared, pf, "PlaneOrientationSequence")
        meas = functional_item(ds, shared, pf, "PixelMeasuresSequence")
        pvt = functional_item(ds, shared, pf, "PixelValueTransformationSequence")
        content = first_item(pf, "FrameContentSequence")
        rescale = top
        if pvt is not None:
            slope, intercept, has = _rescale(pvt)
            rescale = dict(slope=slope, intercept=intercept, has_rescale=has, modality_lut=None)
        ipp = tag_floats(pos.get("ImagePositionPatient"), 3) if pos is not None else None
        if ipp is None and n_frames == 1:
            ipp = top_ipp
        iop = (tag_floats(ori.get("ImageOrientationPatient"), 6) if ori is not None else None) or top_iop
        spacing = (tag_floats(meas.get("PixelSpacing"), 2) if meas is not None else None) or top_spacing
        thickness = tag_float(meas.get("SliceThickness")) if meas is not None else None
        temporal = tag_int(content.get("TemporalPositionIndex")) if content is not None else None
        fh = FrameHeader(frame=i if n_frames > 1 else None, tile=None, ipp=ipp, iop=iop, spacing=spacing, **rescale, **base)
        if thickness is not None:
            fh.slice_thickness = thickness
        if temporal is not None:
            fh.temporal_position = temporal
        frames.append(fh)
    if n_frames > 1 and any(f.ipp is None for f in frames):
        for f in frames:
            f.ipp = None
            f.file_warning = "multi-frame object without per-frame positions: frames kept in stored order"
    return frames


def _linear_modality_lut(ds: Any, bits_stored: int, signed: bool) -> tuple[Any, float, float] | str:
    """The Modality LUT Sequence as (its own small dataset, slope, intercept), or why it cannot be used.

    The reader applies the table itself (``pydicom.pixels.apply_modality_lut``); the export writes
    protected values back through ``StoredFormat``'s slope and intercept, which is exact only for a
    linear table that covers every value the pixels can store. Any other table is refused, as
    writing through it would change pixels the user never protected.
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut

    lut = Dataset()
    lut.ModalityLUTSequence = ds.ModalityLUTSequence
    lut.set_original_encoding(*ds.original_encoding[:2])
    low = -(2 ** (bits_stored - 1)) if signed else 0
    high = 2 ** (bits_stored - 1) - 1 if signed else 2**bits_stored - 1
    try:
        descriptor = [int(v) for v in lut.ModalityLUTSequence[0].LUTDescriptor]
        entries, first = descriptor[0] or 2**16, descriptor[1]
        if first > low or first + entries - 1 < high:
            return (f"Modality LUT Sequence covers stored values {first}..{first + entries - 1}, not every value "
                    f"{low}..{high} of BitsStored {bits_stored}: not supported")
        stored = np.arange(low, high + 1, dtype=np.int64)
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            values = apply_modality_lut(stored, lut).astype(np.float64)
    except Exception as exc:  # noqa: BLE001 - a corrupt table is a reason to skip, not a crash
        return f"unreadable Modality LUT Sequence ({one_line(exc)})"
    slope = (values[-1] - values[0]) / (high - low) if high > low else 0.0
    intercept = values[0] - slope * low
    if slope == 0.0 or not np.array_equal(values, stored * slope + intercept):
        return "non-linear Modality LUT Sequence: not supported (protected values could not be stored back through it)"
    return lut, float(slope), float(intercept)


def _mosaic_layout(ds: Any, rows: int, cols: int):
    """Siemens MOSAIC: (n slices, tiles per side, tile rows, tile cols, first slice IPP, normal, step)."""
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            from nibabel.nicom import csareader

            csa = csareader.get_csa_header(ds, "image")
            n = csareader.get_n_mosaic(csa)
            normal = csareader.get_slice_normal(csa)
    except Exception:
        return None
    if not n or normal is None:
        return None
    n = int(n)
    tiles = int(math.ceil(math.sqrt(n)))
    if rows % tiles or cols % tiles:
        return None
    tile_rows, tile_cols = rows // tiles, cols // tiles
    ipp = tag_floats(ds.get("ImagePositionPatient"), 3)
    iop = tag_floats(ds.get("ImageOrientationPatient"), 6)
    spacing = tag_floats(ds.get("PixelSpacing"), 2)
    if ipp is None or iop is None or spacing is None:
        return None
    # The mosaic's IPP is the corner of the whole mosaic; move it to the corner of the first tile
    # (same correction as dcm2niix and nibabel's MosaicWrapper).
    r = np.asarray(iop[:3])
    c = np.asarray(iop[3:])
    dr, dc = spacing  # row spacing (between rows), column spacing (between columns)
    shift = r * dc * (cols - tile_cols) / 2.0 + c * dr * (rows - tile_rows) / 2.0
    first = np.asarray(ipp) + shift
    normal = np.asarray(normal, dtype=np.float64)
    normal = normal / (np.linalg.norm(normal) or 1.0)
    step = tag_float(ds.get("SpacingBetweenSlices")) or tag_float(ds.get("SliceThickness")) or 1.0
    return n, tiles, tile_rows, tile_cols, tuple(first), tuple(normal), step