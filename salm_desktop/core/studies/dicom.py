"""DICOM: cheap header scan, series grouping, slice sorting and lazy pixel readers.

Scanning reads headers only (``stop_before_pixels``); pixels are decoded on demand by each
:class:`Sample`'s reader (``pydicom.pixels.pixel_array(path, index=frame)`` decodes one frame).

Grouping (see docs/loading.md):

1. SeriesInstanceUID, ImageType, Rows/Columns, ImageOrientationPatient (rounded to 1e-4).
2. Slices are sorted by ImagePositionPatient projected on the slice normal (row x column cosines).
3. Repeated positions: every position occurs T times -> a 4D series, samples ordered (time, slice)
   and ``meta["dims"] = (T, Z)``; unequal repeats -> separate volumes (by AcquisitionNumber when
   that separates them, else by occurrence), each with a warning.
4. Orientation groups of one series that are all single slices (localizer / radial sets) are kept
   together as a set of independent 2D images with a "mixed orientation" warning.
"""

from __future__ import annotations

import math
import struct
import warnings as _warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from salm_desktop.core.model import Geometry, IntensityMap, Series, Skipped, Sample, SourceRef, StoredFormat, short_hash
from salm_desktop.core.studies.limits import MAX_NATIVE_MAGNITUDE, PixelReadError, over_memory_limit

# --------------------------------------------------------------------------------------------
# Non-image objects

_NON_IMAGE_SOP_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.66.5": "SEG",  # surface segmentation
    "1.2.840.10008.5.1.4.1.1.66.1": "REG",
    "1.2.840.10008.5.1.4.1.1.66.3": "REG",
    "1.2.840.10008.5.1.4.1.1.66.2": "FID",
    "1.2.840.10008.5.1.4.1.1.66": "RAW",  # raw data (exact match only, see _non_image_kind)
    "1.2.840.10008.5.1.4.1.1.88.59": "KOS",
    "1.2.840.10008.5.1.4.1.1.88.": "SR",
    "1.2.840.10008.5.1.4.1.1.11.": "PR",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.": "RT",  # plans, records, ... (481.1 RT Image is handled below)
    "1.2.840.10008.5.1.4.1.1.104.": "DOC",  # encapsulated PDF / CDA / STL ...
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.1.3.10": "DICOMDIR",
    "1.2.840.10008.5.1.4.1.1.68.": "surface",
    "1.2.840.10008.5.1.4.1.1.78.": "measurement",
    "1.2.840.10008.5.1.4.1.1.79.": "measurement",
    "1.2.840.10008.5.1.4.1.1.82.": "measurement",
    "1.2.840.10008.5.1.4.1.1.90.": "SR",
    "1.2.840.10008.5.1.4.1.1.91.": "annotation",
}
_NON_IMAGE_MODALITIES = {
    "SEG", "SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "FID", "DOC",
    "RWV", "AU", "ECG", "HD", "PLAN", "RESP", "ANN", "M3D", "OPTBSV",
}
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_VR_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _uid_name(uid: str) -> str:
    try:
        from pydicom.uid import UID

        name = UID(uid).name
        return name if name and name != uid else uid
    except Exception:
        return uid


def _non_image_kind(sop_class: str, modality: str) -> str | None:
    if sop_class == "1.2.840.10008.5.1.4.1.1.481.1":  # RT Image Storage is an image
        return None
    for prefix, kind in _NON_IMAGE_SOP_PREFIXES.items():
        if prefix.endswith("."):
            if sop_class.startswith(prefix):
                return kind
        elif sop_class == prefix:
            return kind
    if modality.upper() in _NON_IMAGE_MODALITIES:
        return modality.upper()
    return None


# --------------------------------------------------------------------------------------------
# Cheap "is this plausibly DICOM?" check


def looks_like_dicom(path: Path) -> bool:
    """True for a DICM preamble, or a raw dataset that starts with a plausible group 0002/0008 tag."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    if head[:4] == b"DICM":
        return True
    for fmt in ("<HH", ">HH"):
        group, element = struct.unpack(fmt, head[:4])
        if group in (0x0002, 0x0008) and element < 0x0100:
            if head[4] in _VR_CHARS and head[5] in _VR_CHARS:  # explicit VR
                return True
            length = struct.unpack(fmt[0] + "I", head[4:8])[0]
            if length < 0x10000:  # implicit VR with a sane first length
                return True
    return False


# --------------------------------------------------------------------------------------------
# Header records


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


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        return None
    return values


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _first(seq_parent: Any, seq_name: str) -> Any:
    seq = getattr(seq_parent, seq_name, None) if seq_parent is not None else None
    try:
        return seq[0] if seq is not None and len(seq) else None
    except Exception:
        return None


def _functional(ds: Any, shared: Any, per_frame: Any, seq: str) -> Any:
    item = _first(per_frame, seq)
    return item if item is not None else _first(shared, seq)


def read_headers(path: Path, root: Path) -> list[FrameHeader] | Skipped:
    """Read one file's header; return its 2D images, or why it is skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not looks_like_dicom(path):
        return Skipped(path, "not a DICOM file (no DICOM header found)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fp, _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            pixel_pos = fp.tell()
            tail = fp.read(12)
    except (InvalidDicomError, EOFError, OSError, ValueError, struct.error, KeyError, TypeError, AttributeError, IndexError) as exc:
        return Skipped(path, f"unreadable DICOM file (truncated or corrupt header: {_one_line(exc)})")
    except Exception as exc:  # pydicom raises many types on garbage; none may abort the scan
        return Skipped(path, f"unreadable DICOM file ({type(exc).__name__}: {_one_line(exc)})")

    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")
    modality = str(ds.get("Modality", "") or "").strip()
    if len(ds) == 0 and not sop_class:
        return Skipped(path, "truncated or empty DICOM file (no data elements)")
    kind = _non_image_kind(sop_class, modality)
    if kind is not None:
        name = _uid_name(sop_class) if sop_class else f"Modality {modality}"
        return Skipped(path, f"DICOM {kind} ({name}) is not an image series")

    # Is there pixel data after the header? (stop_before_pixels leaves the file at its tag.)
    tag = None
    if len(tail) >= 4:
        for fmt in ("<HH", ">HH"):
            t = struct.unpack(fmt, tail[:4])
            if t in _PIXEL_TAGS:
                tag, little = t, fmt == "<HH"
                break
    if tag is None:
        what = _uid_name(sop_class) if sop_class else "unknown SOP class"
        if "Rows" not in ds or "Columns" not in ds:
            if "Image" in what or modality.upper() in ("CT", "MR", "PT", "CR", "DX", "US", "MG", "NM", "XA", "OT"):
                return Skipped(path, f"truncated or incomplete DICOM file ({what} without Rows/Columns and pixel data)")
        return Skipped(path, f"DICOM object without pixel data ({what}) is not an image")
    rows, cols = _int(ds.get("Rows")), _int(ds.get("Columns"))
    if not rows or not cols:
        return Skipped(path, "DICOM image without Rows/Columns")

    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not ts:
        implicit, little_endian = getattr(ds, "original_encoding", (True, True))
        ts = "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little_endian else "1.2.840.10008.1.2.2")
    bits_allocated = _int(ds.get("BitsAllocated"))
    bits_allocated = 16 if bits_allocated is None else bits_allocated  # present but 0 is impossible, not absent
    bits_stored = _int(ds.get("BitsStored"))
    bits_stored = bits_allocated if bits_stored is None else bits_stored
    spp = _int(ds.get("SamplesPerPixel"))
    spp = 1 if spp is None else spp
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    # Absurd sizes from corrupt headers must not turn into huge allocations (one header per frame,
    # or a decoder buffer): every frame needs at least one byte of the file, and no frame is > 2 GiB.
    if n_frames < 1 or n_frames > size:
        return Skipped(path, f"implausible NumberOfFrames {n_frames} for a file of {size} bytes")
    if rows < 0 or cols < 0 or rows * cols * spp * max(bits_allocated, 1) // 8 > 2**31:
        return Skipped(path, f"implausible image size {rows}x{cols}x{spp} at {bits_allocated} bits (over 2 GiB per frame)")
    impossible = _impossible_pixel_description(ds, bits_allocated, bits_stored, spp)
    if impossible:
        return Skipped(path, f"impossible pixel description: {impossible}")
    too_big = over_memory_limit(rows * cols * spp * n_frames, max(bits_allocated // 8, 1) + 8)
    if too_big:
        return Skipped(path, f"image of {n_frames} frame(s) of {rows}x{cols}x{spp} {too_big}")

    # Pixel data present in full? Encapsulated (undefined length) data is checked when decoding.
    explicit = len(tail) >= 6 and tail[4] in _VR_CHARS and tail[5] in _VR_CHARS
    fmt = "<I" if little else ">I"
    if explicit and len(tail) >= 12:
        length, header_len = struct.unpack(fmt, tail[8:12])[0], 12
    elif len(tail) >= 8:
        length, header_len = struct.unpack(fmt, tail[4:8])[0], 8
    else:
        return Skipped(path, "truncated file: pixel data element is cut off")
    if length != 0xFFFFFFFF:
        available = size - pixel_pos - header_len
        if length > available:
            return Skipped(path, f"truncated file: pixel data needs {length} bytes, only {max(available, 0)} present")
        expected = (rows * cols * spp * n_frames * bits_allocated + 7) // 8
        if tag == (0x7FE0, 0x0010) and length < expected:
            return Skipped(path, f"pixel data too short: {length} bytes for {n_frames} frame(s) of {rows}x{cols} ({expected} needed)")
    else:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(ts)
            if not decoder.is_available:
                return Skipped(path, f"cannot decode {_uid_name(ts)}: missing decoder plugin ({'; '.join(decoder.missing_dependencies)})")
        except NotImplementedError:
            return Skipped(path, f"unsupported transfer syntax {_uid_name(ts)}")
        problem = _check_fragments(path, pixel_pos + header_len, size, little, n_frames)
        if problem:
            return Skipped(path, problem)

    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence")
    image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or ()) if v is not None)
    if isinstance(ds.get("ImageType"), str):
        image_type = (str(ds.ImageType).upper(),)

    base = dict(
        path=path,
        root=root,
        sop_class=sop_class,
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        for_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        modality=modality or "OT",
        description=str(ds.get("SeriesDescription", "") or ""),
        image_type=image_type,
        rows=rows,
        cols=cols,
        instance_number=_int(ds.get("InstanceNumber")) or 0,
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        temporal_position=_int(ds.get("TemporalPositionIdentifier")),
        trigger_time=_float(ds.get("TriggerTime")),
        acquisition_time=str(ds.get("AcquisitionTime", "") or ""),
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=bool(_int(ds.get("PixelRepresentation")) or 0),
        rescale_type=str(ds.get("RescaleType", "") or "").upper(),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper(),
        samples_per_pixel=spp,
        n_frames=n_frames,
        transfer_syntax=ts,
        slice_thickness=_float(ds.get("SliceThickness")),
        spacing_between=_float(ds.get("SpacingBetweenSlices")),
    )
    if tag != (0x7FE0, 0x0010):
        return Skipped(path, "float pixel data (parametric map) is not supported")

    def rescale(item: Any) -> tuple[float, float, bool]:
        slope = _float(item.get("RescaleSlope")) if item is not None else None
        intercept = _float(item.get("RescaleIntercept")) if item is not None else None
        has = slope is not None or intercept is not None
        return (slope if slope not in (None, 0.0) else 1.0), (intercept or 0.0), has

    top_slope, top_intercept, top_has = rescale(ds)
    largest = 2.0 ** min(bits_stored, 32)
    if abs(top_slope) * largest + abs(top_intercept) > MAX_NATIVE_MAGNITUDE:
        return Skipped(path, f"implausible rescale: RescaleSlope {top_slope:g} and RescaleIntercept {top_intercept:g} "
                             f"give values beyond +/-{MAX_NATIVE_MAGNITUDE:g}")
    top_spacing = _floats(ds.get("PixelSpacing"), 2) or _floats(ds.get("ImagerPixelSpacing"), 2)
    top_ipp = _floats(ds.get("ImagePositionPatient"), 3)
    top_iop = _floats(ds.get("ImageOrientationPatient"), 6)

    frames: list[FrameHeader] = []
    if n_frames > 1 or shared is not None or per_frame_seq is not None:
        has_per_frame = per_frame_seq is not None and len(per_frame_seq) == n_frames
        for i in range(n_frames):
            pf = per_frame_seq[i] if has_per_frame else None
            pos = _functional(ds, shared, pf, "PlanePositionSequence")
            ori = _functional(ds, shared, pf, "PlaneOrientationSequence")
            meas = _functional(ds, shared, pf, "PixelMeasuresSequence")
            pvt = _functional(ds, shared, pf, "PixelValueTransformationSequence")
            content = _first(pf, "FrameContentSequence")
            slope, intercept, has = rescale(pvt) if pvt is not None else (top_slope, top_intercept, top_has)
            ipp = _floats(pos.get("ImagePositionPatient"), 3) if pos is not None else None
            if ipp is None and n_frames == 1:
                ipp = top_ipp
            iop = (_floats(ori.get("ImageOrientationPatient"), 6) if ori is not None else None) or top_iop
            spacing = (_floats(meas.get("PixelSpacing"), 2) if meas is not None else None) or top_spacing
            thickness = _float(meas.get("SliceThickness")) if meas is not None else None
            temporal = _int(content.get("TemporalPositionIndex")) if content is not None else None
            fh = FrameHeader(
                frame=i if n_frames > 1 else None, tile=None, ipp=ipp, iop=iop, spacing=spacing,
                slope=slope, intercept=intercept, has_rescale=has, **base,
            )
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

    mosaic = _mosaic_layout(ds, rows, cols) if "MOSAIC" in image_type else None
    if mosaic is not None:
        n_tiles, tiles, tile_rows, tile_cols, first_pos, normal, step = mosaic
        for k in range(n_tiles):
            ipp = tuple(float(v) for v in (np.asarray(first_pos) + k * step * np.asarray(normal)))
            fh = FrameHeader(
                frame=None, tile=k, ipp=ipp, iop=top_iop, spacing=top_spacing, slope=top_slope,
                intercept=top_intercept, has_rescale=top_has, mosaic=(tiles, tile_rows, tile_cols), **base,
            )
            fh.rows, fh.cols = tile_rows, tile_cols
            frames.append(fh)
        return frames

    warn = None
    if "MOSAIC" in image_type:
        warn = "Siemens mosaic not split into slices (no readable mosaic header)"
    return [
        FrameHeader(
            frame=None, tile=None, ipp=top_ipp, iop=top_iop, spacing=top_spacing, slope=top_slope,
            intercept=top_intercept, has_rescale=top_has, file_warning=warn, **base,
        )
    ]


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
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    spacing = _floats(ds.get("PixelSpacing"), 2)
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
    step = _float(ds.get("SpacingBetweenSlices")) or _float(ds.get("SliceThickness")) or 1.0
    return n, tiles, tile_rows, tile_cols, tuple(first), tuple(normal), step


_VALID_BITS_ALLOCATED = (1, 8, 16, 32)
_MONO = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK")


def _impossible_pixel_description(ds: Any, bits_allocated: int, bits_stored: int, spp: int) -> str | None:
    """Why the Image Pixel module cannot describe real pixels, or None (checked before any decode)."""
    if bits_allocated not in _VALID_BITS_ALLOCATED:
        return f"BitsAllocated {bits_allocated} (must be 1, 8, 16 or 32)"
    if not 1 <= bits_stored <= bits_allocated:
        return f"BitsStored {bits_stored} with BitsAllocated {bits_allocated} (must be 1..{bits_allocated})"
    high_bit = _int(ds.get("HighBit"))
    if high_bit is not None and not bits_stored - 1 <= high_bit < bits_allocated:
        return f"HighBit {high_bit} with BitsStored {bits_stored} and BitsAllocated {bits_allocated}"
    representation = _int(ds.get("PixelRepresentation"))
    if representation not in (None, 0, 1):
        return f"PixelRepresentation {representation} (must be 0 or 1)"
    if spp not in (1, 3):
        return f"SamplesPerPixel {spp} (must be 1 or 3)"
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if (spp == 1 and photometric in _COLOUR) or (spp == 3 and photometric in _MONO):
        return f"SamplesPerPixel {spp} with PhotometricInterpretation {photometric}"
    planar = _int(ds.get("PlanarConfiguration"))
    if spp == 3 and planar not in (None, 0, 1):
        return f"PlanarConfiguration {planar} (must be 0 or 1)"
    return None


def _check_fragments(path: Path, start: int, size: int, little: bool, n_frames: int) -> str | None:
    """Walk the item headers of encapsulated pixel data (no pixel bytes are read): every item must fit
    in the file and there must be at least one fragment per frame."""
    fmt = "<HHI" if little else ">HHI"
    fragments = 0
    position = start
    try:
        with open(path, "rb") as fp:
            first = True
            while True:
                fp.seek(position)
                head = fp.read(8)
                if len(head) < 8:
                    return "truncated file: encapsulated pixel data ends without its sequence delimiter"
                group, element, length = struct.unpack(fmt, head)
                if (group, element) == (0xFFFE, 0xE0DD):
                    break
                if (group, element) != (0xFFFE, 0xE000):
                    return f"corrupt encapsulated pixel data (item tag ({group:04X},{element:04X}) at byte {position})"
                position += 8 + length
                if position > size:
                    return f"truncated file: an encapsulated pixel data item needs {length} bytes, the file ends first"
                if not first:
                    fragments += 1
                first = False  # the first item is the basic offset table
    except OSError as exc:
        return f"unreadable DICOM file ({_one_line(exc)})"
    if fragments < n_frames:
        return f"encapsulated pixel data has {fragments} fragment(s) for {n_frames} frame(s)"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# --------------------------------------------------------------------------------------------
# Pixel readers


def _decode(path: Path, frame: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return pixel_array(str(path), index=frame)


def make_reader(h: FrameHeader) -> Callable[[], np.ndarray]:
    path, frame, slope, intercept, mosaic, tile = h.path, h.frame, h.slope, h.intercept, h.mosaic, h.tile

    def read() -> np.ndarray:
        where = f" frame {frame}" if frame is not None else ""
        try:
            stored = _decode(path, frame)
        except MemoryError:
            raise PixelReadError(path, f"not enough memory to decode pixel data{where}") from None
        except Exception as exc:  # decoder plugins raise many types; name the file instead
            raise PixelReadError(path, f"cannot decode pixel data{where} ({_one_line(exc)})") from None
        if stored.shape[:2] != (h.rows * (mosaic[0] if mosaic is not None and tile is not None else 1),
                                h.cols * (mosaic[0] if mosaic is not None and tile is not None else 1)):
            raise PixelReadError(path, f"decoded pixel data{where} has shape {stored.shape}, the header says {h.rows}x{h.cols}")
        if mosaic is not None and tile is not None:
            tiles, tr, tc = mosaic
            r0, c0 = (tile // tiles) * tr, (tile % tiles) * tc
            stored = stored[r0 : r0 + tr, c0 : c0 + tc]
        native = stored.astype(np.float64)
        if slope != 1.0 or intercept != 0.0:
            native = native * slope + intercept
        native = native.astype(np.float32)
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


# --------------------------------------------------------------------------------------------
# Grouping and sorting


@dataclass
class _Volume:
    frames: list[FrameHeader]
    split_key: tuple
    dims: tuple[int, ...] | None
    index: list[tuple[int, ...]]
    warnings: list[str] = field(default_factory=list)
    slice_spacing: float | None = None


def _time_key(h: FrameHeader) -> tuple:
    return (
        h.temporal_position if h.temporal_position is not None else 0,
        h.acquisition_number if h.acquisition_number is not None else 0,
        h.trigger_time if h.trigger_time is not None else 0.0,
        h.acquisition_time,
        h.instance_number,
        h.frame if h.frame is not None else 0,
        h.tile if h.tile is not None else 0,
        str(h.path),
    )


def _instance_key(h: FrameHeader) -> tuple:
    return (h.instance_number, h.frame if h.frame is not None else 0, h.tile if h.tile is not None else 0, str(h.path))


def _spacing_warnings(distances: np.ndarray) -> tuple[float | None, list[str]]:
    """Median step between sorted unique positions, plus gap / uneven-spacing warnings."""
    if distances.size < 2:
        return None, []
    steps = np.diff(distances)
    median = float(np.median(steps))
    out: list[str] = []
    if median <= 1e-6:
        return None, out
    tol = max(0.01 * median, 1e-3)
    gaps = np.nonzero(steps > 1.5 * median)[0]
    for g in gaps[:3]:
        missing = int(round(steps[g] / median)) - 1
        out.append(
            f"gap: {steps[g]:.3g} mm between slices {g} and {g + 1} (usual step {median:.3g} mm, "
            f"~{max(missing, 1)} slice(s) missing)"
        )
    if len(gaps) > 3:
        out.append(f"gap: {len(gaps) - 3} more gaps")
    others = np.delete(steps, gaps)
    if others.size and np.max(np.abs(others - median)) > tol:
        out.append(f"uneven slice spacing: steps from {others.min():.4g} to {others.max():.4g} mm")
    return median, out


def _build_volume(frames: list[FrameHeader], split_key: tuple) -> list[_Volume]:
    """Sort one orientation group; detect repeated positions (4D) and spacing problems."""
    if len(frames) == 1:
        return [_Volume(frames, split_key, (1,), [(0,)])]
    normal = frames[0].normal
    if normal is None or any(h.ipp is None for h in frames):
        ordered = sorted(frames, key=_instance_key)
        vol = _Volume(ordered, split_key, None, [(i,) for i in range(len(ordered))])
        single_multiframe = len({h.path for h in frames}) == 1 and all(h.frame is not None for h in frames)
        if not single_multiframe:
            vol.warnings.append("missing ImagePositionPatient/ImageOrientationPatient: slices ordered by InstanceNumber")
        return [vol]

    dist = np.array([float(np.dot(np.asarray(h.ipp), normal)) for h in frames])
    keys = np.round(dist, 2)
    positions = sorted(set(keys.tolist()))
    by_pos: dict[float, list[int]] = defaultdict(list)
    for i, k in enumerate(keys.tolist()):
        by_pos[k].append(i)
    counts = {len(v) for v in by_pos.values()}

    def finish(vol_frames: list[FrameHeader], key: tuple) -> _Volume:
        d = np.array([float(np.dot(np.asarray(h.ipp), normal)) for h in vol_frames])
        order = np.argsort(d, kind="stable")
        ordered = [vol_frames[i] for i in order]
        vol = _Volume(ordered, key, (len(ordered),), [(i,) for i in range(len(ordered))])
        vol.slice_spacing, vol.warnings = _spacing_warnings(np.sort(d))
        return vol

    if counts == {1}:
        vol = finish(frames, split_key)
        vol.warnings.extend(_tilt_warning(vol.frames))
        return [vol]

    if len(counts) == 1:  # every position repeated T times: 4D (time, slice)
        t_count = counts.pop()
        z_count = len(positions)
        grid: list[list[FrameHeader]] = []
        for p in positions:
            grid.append(sorted((frames[i] for i in by_pos[p]), key=_time_key))
        ordered, index = [], []
        for t in range(t_count):
            for z in range(z_count):
                ordered.append(grid[z][t])
                index.append((t, z))
        vol = _Volume(ordered, split_key, (t_count, z_count), index)
        vol.slice_spacing, vol.warnings = _spacing_warnings(np.array(positions, dtype=np.float64))
        vol.warnings.append(f"repeated slice positions: loaded as 4D ({t_count} time points x {z_count} positions)")
        return [vol]

    # Unequal repeats: separate volumes, by AcquisitionNumber when that separates them.
    acq: dict[Any, list[FrameHeader]] = defaultdict(list)
    for h in frames:
        acq[h.acquisition_number].append(h)
    groups: list[list[FrameHeader]]
    if len(acq) > 1 and all(
        len({round(float(np.dot(np.asarray(h.ipp), normal)), 2) for h in g}) == len(g) for g in acq.values()
    ):
        groups = [acq[k] for k in sorted(acq, key=lambda v: (v is None, v or 0))]
        how = "AcquisitionNumber"
    else:
        occurrence: dict[int, list[FrameHeader]] = defaultdict(list)
        for p in positions:
            for n, i in enumerate(sorted(by_pos[p], key=lambda i: _time_key(frames[i]))):
                occurrence[n].append(frames[i])
        groups = [occurrence[n] for n in sorted(occurrence)]
        how = "repetition"
    vols = []
    for n, g in enumerate(groups):
        vol = finish(g, split_key + (f"{how}-{n}",))
        vol.warnings.insert(
            0, f"repeated slice positions with unequal counts: split by {how} into {len(groups)} volumes (this is {n + 1})"
        )
        vols.append(vol)
    return vols


def _tilt_warning(frames: list[FrameHeader]) -> list[str]:
    """Slices whose positions drift in-plane (gantry tilt, sheared stacks)."""
    if len(frames) < 2 or frames[0].iop is None:
        return []
    r = np.asarray(frames[0].iop[:3])
    c = np.asarray(frames[0].iop[3:])
    p = np.array([h.ipp for h in frames], dtype=np.float64)
    d = p - p[0]
    drift = np.max(np.abs(np.stack([d @ r, d @ c], axis=1)))
    spacing = frames[0].spacing or (1.0, 1.0)
    if drift > 0.5 * min(spacing):
        return [f"slice positions drift in-plane by up to {drift:.3g} mm (gantry tilt or sheared stack)"]
    return []


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
        volumes: list[_Volume] = []
        if len(by_iop) > 1 and all(len(g) == 1 for g in by_iop.values()):
            ordered = sorted(group, key=_instance_key)
            vol = _Volume(ordered, base_key, None, [(i,) for i in range(len(ordered))])
            vol.warnings.append(
                f"mixed orientation: {len(ordered)} images with different orientations kept as independent 2D images (not a volume)"
            )
            volumes.append(vol)
        else:
            for iop_key, sub in sorted(by_iop.items(), key=lambda kv: min(_instance_key(h) for h in kv[1])):
                key = base_key + ((str(iop_key),) if len(by_iop) > 1 else ())
                for vol in _build_volume(sub, key):
                    if len(by_iop) > 1:
                        vol.warnings.insert(0, f"mixed orientation: series split into {len(by_iop)} parts by ImageOrientationPatient")
                    volumes.append(vol)
        for vol in volumes:
            out.append(_make_series(vol, uid, duplicates.get(uid, 0)))
    return out


def _series_sort_key(frames: list[FrameHeader]) -> tuple:
    h = min(frames, key=lambda f: str(f.path))
    return (str(h.root), h.study_uid, h.series_uid, str(h.path))


def _make_series(vol: _Volume, uid: str, duplicates: int) -> Series:
    from salm_desktop.core.studies.lazy import LazyIntensitySeries

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
        series.set_intensity_factory(lambda s: IntensityMap.robust(_sample_values(s.samples)))
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
        voi = _first(_first(ds, "SharedFunctionalGroupsSequence"), "FrameVOILUTSequence")
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


def _sample_values(samples: list[Sample], limit: int = 16) -> np.ndarray:
    if not samples:
        return np.zeros(0, np.float32)
    idx = np.unique(np.linspace(0, len(samples) - 1, num=min(limit, len(samples))).round().astype(int))
    return np.concatenate([samples[i].read().ravel() for i in idx])
