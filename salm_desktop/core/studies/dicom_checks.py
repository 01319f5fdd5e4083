"""DICOM checks made before any pixel is trusted, and tolerant readers of tag values.

Everything here reads headers or item headers only: is the file plausibly DICOM, is it an image at
all, can its Image Pixel module describe real pixels, is its encapsulated pixel data complete.
A problem comes back as a sentence for the user (the caller turns it into a ``Skipped``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salm_desktop.core.studies.limits import over_memory_limit

# --------------------------------------------------------------------------------------------
# Non-image objects

_NON_IMAGE_SOP_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.66.5": "SEG",  # surface segmentation
    "1.2.840.10008.5.1.4.1.1.66.1": "REG",
    "1.2.840.10008.5.1.4.1.1.66.3": "REG",
    "1.2.840.10008.5.1.4.1.1.66.2": "FID",
    "1.2.840.10008.5.1.4.1.1.66": "RAW",  # raw data (exact match only, see non_image_kind)
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
PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
VR_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def uid_name(uid: str) -> str:
    try:
        from pydicom.uid import UID

        name = UID(uid).name
        return name if name and name != uid else uid
    except Exception:
        return uid


def non_image_kind(sop_class: str, modality: str) -> str | None:
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
            if head[4] in VR_CHARS and head[5] in VR_CHARS:  # explicit VR
                return True
            length = struct.unpack(fmt[0] + "I", head[4:8])[0]
            if length < 0x10000:  # implicit VR with a sane first length
                return True
    return False


# --------------------------------------------------------------------------------------------
# Tag values that tolerate junk (a bad value reads as None, never raises)



def tag_floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        return None
    return values


def tag_float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def tag_int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def first_item(seq_parent: Any, seq_name: str) -> Any:
    seq = getattr(seq_parent, seq_name, None) if seq_parent is not None else None
    try:
        return seq[0] if seq is not None and len(seq) else None
    except Exception:
        return None


def functional_item(ds: Any, shared: Any, per_frame: Any, seq: str) -> Any:
    item = first_item(per_frame, seq)
    return item if item is not None else first_item(shared, seq)


# --------------------------------------------------------------------------------------------
# Image Pixel module and pixel data element

_VALID_BITS_ALLOCATED = (1, 8, 16, 32)
_MONO = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK")


def impossible_pixel_description(ds: Any, bits_allocated: int, bits_stored: int, spp: int) -> str | None:
    """Why the Image Pixel module cannot describe real pixels, or None (checked before any decode)."""
    if bits_allocated not in _VALID_BITS_ALLOCATED:
        return f"BitsAllocated {bits_allocated} (must be 1, 8, 16 or 32)"
    if not 1 <= bits_stored <= bits_allocated:
        return f"BitsStored {bits_stored} with BitsAllocated {bits_allocated} (must be 1..{bits_allocated})"
    high_bit = tag_int(ds.get("HighBit"))
    if high_bit is not None and not bits_stored - 1 <= high_bit < bits_allocated:
        return f"HighBit {high_bit} with BitsStored {bits_stored} and BitsAllocated {bits_allocated}"
    representation = tag_int(ds.get("PixelRepresentation"))
    if representation not in (None, 0, 1):
        return f"PixelRepresentation {representation} (must be 0 or 1)"
    if spp not in (1, 3):
        return f"SamplesPerPixel {spp} (must be 1 or 3)"
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if (spp == 1 and photometric in _COLOUR) or (spp == 3 and photometric in _MONO):
        return f"SamplesPerPixel {spp} with PhotometricInterpretation {photometric}"
    planar = tag_int(ds.get("PlanarConfiguration"))
    if spp == 3 and planar not in (None, 0, 1):
        return f"PlanarConfiguration {planar} (must be 0 or 1)"
    return None


def check_fragments(path: Path, start: int, size: int, little: bool, n_frames: int) -> str | None:
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
        return f"unreadable DICOM file ({one_line(exc)})"
    if fragments < n_frames:
        return f"encapsulated pixel data has {fragments} fragment(s) for {n_frames} frame(s)"
    return None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


@dataclass
class PixelModule:
    """The Image Pixel facts every check below needs, read once."""

    rows: int
    cols: int
    bits_allocated: int
    bits_stored: int
    samples_per_pixel: int
    n_frames: int
    transfer_syntax: str


def pixel_module(ds: Any) -> PixelModule | str:
    rows, cols = tag_int(ds.get("Rows")), tag_int(ds.get("Columns"))
    if not rows or not cols:
        return "DICOM image without Rows/Columns"
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not ts:
        implicit, little_endian = getattr(ds, "original_encoding", (True, True))
        ts = "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little_endian else "1.2.840.10008.1.2.2")
    bits_allocated = tag_int(ds.get("BitsAllocated"))
    bits_allocated = 16 if bits_allocated is None else bits_allocated  # present but 0 is impossible, not absent
    bits_stored = tag_int(ds.get("BitsStored"))
    bits_stored = bits_allocated if bits_stored is None else bits_stored
    spp = tag_int(ds.get("SamplesPerPixel"))
    spp = 1 if spp is None else spp
    n_frames = tag_int(ds.get("NumberOfFrames")) or 1
    return PixelModule(rows, cols, bits_allocated, bits_stored, spp, n_frames, ts)


def size_problem(ds: Any, px: PixelModule, size: int) -> str | None:
    # Absurd sizes from corrupt headers must not turn into huge allocations (one header per frame,
    # or a decoder buffer): every frame needs at least one byte of the file, and no frame is > 2 GiB.
    rows, cols, spp, n_frames, bits_allocated = px.rows, px.cols, px.samples_per_pixel, px.n_frames, px.bits_allocated
    if n_frames < 1 or n_frames > size:
        return f"implausible NumberOfFrames {n_frames} for a file of {size} bytes"
    if rows < 0 or cols < 0 or rows * cols * spp * max(bits_allocated, 1) // 8 > 2**31:
        return f"implausible image size {rows}x{cols}x{spp} at {bits_allocated} bits (over 2 GiB per frame)"
    impossible = impossible_pixel_description(ds, bits_allocated, px.bits_stored, spp)
    if impossible:
        return f"impossible pixel description: {impossible}"
    too_big = over_memory_limit(rows * cols * spp * n_frames, max(bits_allocated // 8, 1) + 8)
    if too_big:
        return f"image of {n_frames} frame(s) of {rows}x{cols}x{spp} {too_big}"
    return None


def pixel_element_problem(
    path: Path, px: PixelModule, tag: tuple[int, int], little: bool, tail: bytes, size: int, pixel_pos: int
) -> str | None:
    """Is the pixel data present in full? Encapsulated (undefined length) data is checked item by item."""
    explicit = len(tail) >= 6 and tail[4] in VR_CHARS and tail[5] in VR_CHARS
    fmt = "<I" if little else ">I"
    if explicit and len(tail) >= 12:
        length, header_len = struct.unpack(fmt, tail[8:12])[0], 12
    elif len(tail) >= 8:
        length, header_len = struct.unpack(fmt, tail[4:8])[0], 8
    else:
        return "truncated file: pixel data element is cut off"
    if length != 0xFFFFFFFF:
        available = size - pixel_pos - header_len
        if length > available:
            return f"truncated file: pixel data needs {length} bytes, only {max(available, 0)} present"
        expected = (px.rows * px.cols * px.samples_per_pixel * px.n_frames * px.bits_allocated + 7) // 8
        if tag == (0x7FE0, 0x0010) and length < expected:
            return f"pixel data too short: {length} bytes for {px.n_frames} frame(s) of {px.rows}x{px.cols} ({expected} needed)"
        return None
    from pydicom.pixels import get_decoder

    ts = px.transfer_syntax
    try:
        decoder = get_decoder(ts)
        if not decoder.is_available:
            return f"cannot decode {uid_name(ts)}: missing decoder plugin ({'; '.join(decoder.missing_dependencies)})"
    except NotImplementedError:
        return f"unsupported transfer syntax {uid_name(ts)}"
    return check_fragments(path, pixel_pos + header_len, size, little, px.n_frames)
