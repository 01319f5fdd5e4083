"""Derived DICOM writer (DESIGN.md "Derived DICOM", PS3.3 C.7.6.1.1.2).

Each source file is re-read with pydicom, its pixels are replaced by the protected stored values and
it is marked as a derived instance: new SOPInstanceUID (file meta too) and SeriesInstanceUID derived
deterministically from the originals, ImageType value 1 = DERIVED, a DerivationDescription, a
SourceImageSequence item pointing at the original instance, and "(protected)" in SeriesDescription.
Everything else (study, frame of reference, geometry, rescale, bit depth, private tags) is kept.

The output is always lossless: the source's own transfer syntax when it is lossless and pydicom has an
encoder for it (RLE Lossless, JPEG 2000 Lossless where pylibjpeg-openjpeg is installed, JPEG-LS
lossless where pyjpegls is installed), otherwise Explicit VR Little Endian. Big-endian and implicit-VR
sources are written as Explicit VR Little Endian. A lossy source keeps LossyImageCompression = "01"
(its history) and is written losslessly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from salm_desktop.core.export.common import (ExportError, Observer, ProtectedFn, WriteContext, WriteResult,
                                             iter_source_files, read_members, reread_failure, stored_dtype_array)
from salm_desktop.core.export.deid import burned_in_reason
from salm_desktop.core.model import Series, Skipped

log = logging.getLogger(__name__)

UID_SALT_APP = "salm-desktop"
PROTECTED_MARK = " (protected)"

# Transfer syntaxes whose pixel data is exactly the stored values.
_LOSSLESS = {
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    UID("1.2.840.10008.1.2.4.57"),  # JPEG Lossless, Non-Hierarchical (Process 14)
    UID("1.2.840.10008.1.2.4.70"),  # JPEG Lossless SV1
    UID("1.2.840.10008.1.2.4.201"),  # HTJ2K Lossless
    UID("1.2.840.10008.1.2.4.202"),  # HTJ2K Lossless RPCL
}
# Lossless syntaxes we may write again when an encoder is available.
_REENCODABLE = (RLELossless, JPEG2000Lossless, JPEGLSLossless)

# Value lengths of binary VRs that a big-endian file stores byte-swapped.
_SWAP_WIDTH = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def derive_uid(original: str, salt: str) -> str:
    """The new UID for ``original``: deterministic, so a rerun with the same settings gives the same UIDs."""
    return generate_uid(entropy_srcs=[str(original), UID_SALT_APP, salt])


def is_lossy_source(ds: Dataset) -> bool:
    syntax = UID(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    flag = str(ds.get("LossyImageCompression", "")).strip()
    if flag in ("00", "01"):  # the object's own history wins (e.g. a reversible JPEG 2000 .91 file says 00)
        return flag == "01"
    return syntax not in _LOSSLESS


def choose_output_syntax(source: UID) -> UID:
    """Lossless output syntax for a source syntax: its own where we can encode it, else Explicit VR LE."""
    source = UID(source)
    if source in _REENCODABLE:
        try:
            from pydicom.pixels import get_encoder  # pydicom >= 3

            if get_encoder(source).is_available:
                return source
        except Exception:  # noqa: BLE001 - no encoder: fall back
            pass
    if source == DeflatedExplicitVRLittleEndian:
        return source
    return ExplicitVRLittleEndian


def _pixel_dtype(ds: Dataset) -> np.dtype:
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32):
        raise ExportError(f"BitsAllocated {bits} is not supported for writing")
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def _swap_binary_values(ds: Dataset) -> None:
    """Byte-swap OW/OL/OF/OD/OV values read from a big-endian file (pydicom leaves them as bytes)."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_binary_values(item)
            continue
        if elem.tag == 0x7FE00010 or elem.VR not in _SWAP_WIDTH or not isinstance(elem.value, (bytes, bytearray)):
            continue
        width = _SWAP_WIDTH[elem.VR]
        if len(elem.value) % width == 0 and elem.value:
            elem.value = np.frombuffer(elem.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _drop_group_lengths(ds: Dataset) -> None:
    """Retired group-length elements would be wrong after our edits; pydicom writes the file meta's own."""
    for tag in [tag for tag in ds.keys() if tag.element == 0 and tag.group != 2]:  # keys: no value decoding
        del ds[tag]


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mark_derived(ds: Dataset, *, new_sop: str, new_series: str, derivation: str, source_reference: bool = True) -> None:
    """Set the derived-image attributes on ``ds`` (pixels are handled separately).

    ``source_reference=False`` (a de-identified release): no SourceImageSequence, which would point
    back at the original instance.
    """
    old_sop = str(ds.SOPInstanceUID)
    sop_class = str(ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", "")))

    ds.SOPInstanceUID = new_sop
    ds.file_meta.MediaStorageSOPInstanceUID = new_sop
    if sop_class and "MediaStorageSOPClassUID" not in ds.file_meta:
        ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SeriesInstanceUID = new_series

    image_type = list(ds.get("ImageType", []) or [])
    if image_type:
        image_type[0] = "DERIVED"
        if len(image_type) == 1:
            image_type.append("SECONDARY")
    else:
        image_type = ["DERIVED", "SECONDARY"]
    ds.ImageType = image_type

    previous = str(ds.get("DerivationDescription", "") or "").strip()
    text = derivation if not previous else f"{previous}; {derivation}"
    ds.DerivationDescription = _truncate(text, 1024)

    if source_reference:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = old_sop
        ds.SourceImageSequence = Sequence([item])
    elif "SourceImageSequence" in ds:
        del ds.SourceImageSequence

    description = str(ds.get("SeriesDescription", "") or "").strip()
    if PROTECTED_MARK.strip() not in description:
        room = 64 - len(PROTECTED_MARK)
        description = (description[:room].rstrip() + PROTECTED_MARK).strip()
    ds.SeriesDescription = description


def _set_pixels(ds: Dataset, pixels: np.ndarray, syntax: UID) -> UID:
    """Store ``pixels`` (stored values, frames first) in ``ds`` with ``syntax``; returns the syntax used."""
    dtype = _pixel_dtype(ds)
    pixels = np.ascontiguousarray(pixels.astype(dtype, copy=False))
    if syntax in _REENCODABLE:
        try:
            ds.compress(syntax, pixels, generate_instance_uid=False)
            check = ds.pixel_array
            if np.array_equal(np.asarray(check).reshape(pixels.shape), pixels):
                return syntax
            log.warning("lossless re-encoding to %s did not round-trip; writing Explicit VR Little Endian", syntax.name)
        except Exception as exc:  # noqa: BLE001 - encoder refused these pixels: fall back
            log.warning("could not encode %s (%s); writing Explicit VR Little Endian", syntax.name, exc)
        syntax = ExplicitVRLittleEndian
    little = pixels.astype(dtype.newbyteorder("<"), copy=False)
    ds.PixelData = little.tobytes()
    elem = ds["PixelData"]
    elem.VR = "OW" if dtype.itemsize > 1 else "OB"
    elem.is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = syntax
    return syntax


def _frame_array(ds: Dataset) -> np.ndarray:
    """The file's stored pixel values as (frames, rows, cols[, samples])."""
    arr = np.array(ds.pixel_array)  # a writable copy
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis]
    if arr.ndim != (4 if spp > 1 else 3):
        raise ExportError(f"unexpected pixel array shape {arr.shape}")
    return arr


def _place(frames: np.ndarray, sample_shape: tuple[int, ...], frame: int | None, meta: dict, stored: np.ndarray) -> None:
    """Put one sample's stored values back where the loader took them from."""
    f = 0 if frame is None else int(frame)
    if not 0 <= f < frames.shape[0]:
        raise ExportError(f"frame {f} out of range (file has {frames.shape[0]})")
    tile, layout = meta.get("mosaic_tile"), meta.get("mosaic_layout")
    if tile is not None and layout is not None:  # a Siemens mosaic tile: (tiles per side, tile rows, tile cols)
        tiles, h, w = (int(v) for v in layout)
        r0, c0 = (int(tile) // tiles) * h, (int(tile) % tiles) * w
        if stored.shape[:2] != (h, w):
            raise ExportError(f"mosaic tile of shape {stored.shape} does not match the layout {h}x{w}")
        frames[f, r0 : r0 + h, c0 : c0 + w] = stored
        return
    if tuple(frames.shape[1:]) != tuple(sample_shape):
        raise ExportError(f"sample of shape {sample_shape} does not match the frame shape {frames.shape[1:]}")
    frames[f] = stored


def write_dicom_series(series: Series, protected: ProtectedFn, ctx: WriteContext, *, observer: Observer | None = None,
                       done_offset: int = 0, total: int = 0) -> WriteResult:
    """Write every file of a DICOM ``series`` as a derived instance under ``ctx.out_root``.

    With a ``ctx.deidentifier`` (the default of a job) each file is also de-identified (PS3.15 Basic
    Profile, see deid.py): UIDs become keyed pseudonyms, no SourceImageSequence, and path components
    that carry the file's identifiers are replaced. A file that may show burned-in annotations is
    skipped with the reason unless the options allow it. Without one, identity is kept (internal use).

    ``protected(i, original)`` gives the protected native values of sample ``i`` (or ``None``: unchanged
    pixels, but still a derived instance). ``observer(i, original, written)`` sees each sample's
    original native values and the native values the file now holds. A source file that can no longer
    be read is skipped with its reason; an OSError while writing (read-only, disk full) propagates.
    """
    result = WriteResult()
    deidentifier, uid_salt, derivation = ctx.deidentifier, ctx.uid_salt, ctx.derivation(series)
    series_uid = str(series.meta.get("series_uid", "") or "")
    if deidentifier is not None:
        new_series_uid = deidentifier.pseudonyms.uid(series_uid or series.id, instance=True)
    else:
        new_series_uid = derive_uid(series_uid or series.id, uid_salt)
    if series_uid:
        result.uid_map[series_uid] = new_series_uid
    for path, members in iter_source_files(series, ctx.progress, done_offset, total, "file"):
        try:
            ds = pydicom.dcmread(path)
            originals, natives = read_members(members, protected)
        except Exception as exc:  # noqa: BLE001 - a file that changed under us: skip it with the reason
            result.skipped.append(reread_failure(path, exc))
            continue
        if deidentifier is not None and not deidentifier.options.allow_burned_in:
            reason = burned_in_reason(ds)
            if reason:
                result.skipped.append(Skipped(path, f"not written: {reason}; check the pixels for names or dates and, "
                                                    "if they are clean, allow burned-in annotations (--allow-burned-in)"))
                continue
        source_syntax = UID(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
        try:
            frames = _frame_array(ds)
            seen = []
            for index, sample in members:
                native = natives[index]
                if native is None:
                    written = sample.stored.quantize(originals[index])
                    stored = sample.stored.to_stored(originals[index])
                else:
                    stored = stored_dtype_array(sample, native)
                    written = sample.stored.to_native(stored)
                _place(frames, tuple(sample.shape), sample.source.frame, sample.meta, stored)
                seen.append((index, originals[index], written))
        except ExportError as exc:
            raise ExportError(f"{path}: {exc}") from None
        if observer is not None:
            for item in seen:
                observer(*item)

        lossy = is_lossy_source(ds)
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric.startswith("YBR") and source_syntax.is_compressed:
            ds.PhotometricInterpretation = "RGB"  # pydicom decodes YCbCr JPEG to RGB
        if not source_syntax.is_little_endian:
            _swap_binary_values(ds)
        _drop_group_lengths(ds)

        old_sop = str(ds.SOPInstanceUID)
        relative = ctx.layout.relative(path, series.root)
        if deidentifier is not None:
            try:
                found = deidentifier.deidentify(ds)
            except Exception as exc:  # noqa: BLE001 - a value pydicom cannot decode: never write it half de-identified
                result.skipped.append(Skipped(path, f"not written: could not be de-identified ({type(exc).__name__}: "
                                                    f"{(str(exc).strip().splitlines() or [''])[-1][:120]})"))
                continue
            new_sop = str(ds.SOPInstanceUID)
            mark_derived(ds, new_sop=new_sop, new_series=new_series_uid, derivation=derivation, source_reference=False)
            relative = Path(*[deidentifier.scrub(part, found.values) for part in relative.parts])
        else:
            new_sop = derive_uid(old_sop, uid_salt)
            mark_derived(ds, new_sop=new_sop, new_series=new_series_uid, derivation=derivation)
        if lossy:
            ds.LossyImageCompression = "01"
        pixels = frames if int(ds.get("NumberOfFrames", 1) or 1) > 1 else frames[0]
        out_syntax = choose_output_syntax(source_syntax)
        if lossy:
            out_syntax = ExplicitVRLittleEndian
        _set_pixels(ds, pixels, out_syntax)
        for name, fn in (("SmallestImagePixelValue", np.min), ("LargestImagePixelValue", np.max)):
            if name in ds and pixels.size:
                setattr(ds, name, int(fn(pixels)))
        if deidentifier is not None:
            deidentifier.clean_file_meta(ds)

        dest = ctx.out_root / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(dest, ds, enforce_file_format=True)
        result.files.append(dest)
        result.uid_map[old_sop] = new_sop
    return result
