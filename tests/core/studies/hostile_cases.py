"""Structure-aware hostile inputs: real files whose header fields lie (issue 21).

Each case starts from a real file of ../shared/data (or an image made from real pixels) and changes
one or more header fields, so that the file still parses but describes pixels it does not hold:
impossible bit depths, sizes far larger than the data, wrong data types and offsets, non-finite
scaling, detached data files that are devices, PNG/JPEG dimensions of a decompression bomb, npz
members that claim more than they hold or hold pickles. ``write_cases`` writes them into a folder;
each case says whether it must be skipped at scan time ("skip") or may also load ("any").

Used by tests/core/studies/test_hostile_headers.py and benchmarks/hostile_inputs.py.
"""

from __future__ import annotations

import gzip
import io
import itertools
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass
class Case:
    name: str  # file name inside the case folder
    family: str  # dicom, nifti, nrrd, mha, png, jpeg, npz
    field: str  # the header field(s) that lie
    expect: str  # "skip": must be skipped at scan time; "any": load, skip or per-file pixel error


# --------------------------------------------------------------------------------------------- DICOM
DICOM_BASES = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"]

# (field, value, must be skipped at scan time?)
DICOM_LIES: list[tuple[str, object, bool]] = [
    *[("BitsAllocated", v, True) for v in (0, 7, 12, 13, 24, 40, 64, 65535)],
    *[("BitsStored", v, True) for v in (17, 33, 255)],
    ("BitsStored", 0, True),
    *[("HighBit", v, True) for v in (16, 200, 2)],
    *[("PixelRepresentation", v, True) for v in (2, 255)],
    *[("SamplesPerPixel", v, True) for v in (0, 2, 4, 255)],
    ("SamplesPerPixel", 3, False),  # with MONOCHROME2: skipped; the data length decides otherwise
    *[("Rows", v, True) for v in (65535, 4096)],
    ("Rows", 1, False),
    *[("Columns", v, True) for v in (65535, 8192)],
    *[("NumberOfFrames", v, True) for v in (1000, 2**31 - 1)],
    *[("NumberOfFrames", v, False) for v in (0, 2)],
    *[("PhotometricInterpretation", v, False) for v in ("RGB", "YBR_FULL", "", "PALETTE COLOR", "NONSENSE")],
    ("PlanarConfiguration", 7, False),
    *[("RescaleSlope", v, False) for v in ("1e38", "-1e38", "nan", "inf", "0")],
    ("RescaleIntercept", "1e38", True), ("RescaleIntercept", "-inf", False),
    *[("PixelSpacing", v, False) for v in (["nan", "nan"], ["-1", "0"], ["1e308", "1"])],
    *[("ImagePositionPatient", v, False) for v in (["nan", "0", "0"], ["1e308", "1e308", "1e308"])],
    ("ImageOrientationPatient", ["nan"] * 6, False),
]
TRANSFER_SYNTAX_LIES = [
    ("1.2.840.10008.1.2.4.50", False),  # JPEG baseline on raw data
    ("1.2.840.10008.1.2.5", False),  # RLE on raw data
    ("1.2.840.10008.1.2.2", False),  # big endian on little endian data
    ("1.2.840.10008.1.2.4.90", False),  # JPEG 2000
    ("1.2.3.4.5", False),  # not a transfer syntax at all
]


def _set(ds, keyword: str, value) -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag in ds:
        ds[tag].value = value
    else:
        ds.add_new(tag, dictionary_VR(tag), value)


def _dicom_cases(data_dir: Path, out: Path, rng: np.random.Generator) -> list[Case]:
    import pydicom
    from pydicom import config

    config.settings.writing_validation_mode = config.IGNORE
    config.settings.reading_validation_mode = config.IGNORE
    cases: list[Case] = []

    def save(ds, name: str, family_field: str, must_skip: bool) -> None:
        target = out / name
        try:
            ds.save_as(target, enforce_file_format=False)
        except Exception:  # noqa: BLE001 - pydicom refuses to write some contradictions: that case is moot
            return
        cases.append(Case(name, "dicom", family_field, "skip" if must_skip else "any"))

    for base in DICOM_BASES:
        src = data_dir / "dicom" / "pydicom_small" / base
        stem = src.stem
        compressed = "RLE" in base or "jp2k" in base
        for field, value, must_skip in DICOM_LIES:
            ds = pydicom.dcmread(src)
            _set(ds, field, value)
            # Rows/Columns that shrink the image leave more data than needed: only growth is impossible.
            # (compressed data have no size bound: there a larger image is found when decoding).
            skip = must_skip and not (compressed and field in ("Rows", "Columns"))
            save(ds, f"{stem}__{field}_{_slug(value)}.dcm", field, skip)
        for uid, must_skip in TRANSFER_SYNTAX_LIES:
            ds = pydicom.dcmread(src)
            ds.file_meta.TransferSyntaxUID = uid
            save(ds, f"{stem}__TransferSyntax_{uid.replace('.', '_')}.dcm", "TransferSyntaxUID", must_skip)
        # Pixel data shorter than the header needs: must be skipped at scan time for raw data.
        ds = pydicom.dcmread(src)
        if not compressed:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3 * 2 // 2 * 2]
            save(ds, f"{stem}__PixelData_short.dcm", "PixelData length", True)
        # Combinations: two or three fields lie at once (seeded).
        for n in range(6):
            ds = pydicom.dcmread(src)
            picks = rng.choice(len(DICOM_LIES), size=int(rng.integers(2, 4)), replace=False)
            fields = []
            must = False
            for i in picks:
                field, value, must_skip = DICOM_LIES[int(i)]
                _set(ds, field, value)
                fields.append(field)
            save(ds, f"{stem}__combo{n}.dcm", "+".join(fields), must)
    return cases


# --------------------------------------------------------------------------------------------- NIfTI
# NIfTI-1 header offsets (bytes): dim 40 (8 x int16), datatype 70, bitpix 72, pixdim 76 (8 x float32),
# vox_offset 108, scl_slope 112, scl_inter 116, qform_code 252, sform_code 254, quatern_b 256,
# srow_x 280, magic 344.
NIFTI1_LIES: list[tuple[str, int, str, object, bool]] = [
    # (field, offset, struct format, value, must skip)
    ("dim0", 40, "h", 0, False), ("dim0", 40, "h", 8, False), ("dim0", 40, "h", -1, False),
    ("dim1", 42, "h", 32767, True), ("dim2", 44, "h", 32767, True), ("dim3", 46, "h", 32767, True),
    ("dim1", 42, "h", 0, True), ("dim1", 42, "h", -5, True), ("dim4", 48, "h", 30000, False),
    ("dim_all", 40, "4h", (3, 4000, 4000, 4000), True),
    ("datatype", 70, "h", 0, True), ("datatype", 70, "h", 9999, True), ("datatype", 70, "h", 32, True),
    ("datatype", 70, "h", 128, True), ("datatype", 70, "h", 1536, True), ("datatype", 70, "h", 64, True),
    ("datatype", 70, "h", 1, False), ("datatype", 70, "h", 2, False), ("datatype", 70, "h", 16, True),
    ("bitpix", 72, "h", 3, False),
    ("pixdim1", 80, "f", float("nan"), False), ("pixdim1", 80, "f", -1.0, False), ("pixdim3", 88, "f", float("inf"), False),
    ("vox_offset", 108, "f", 1e9, True), ("vox_offset", 108, "f", -352.0, False), ("vox_offset", 108, "f", float("nan"), False),
    ("vox_offset", 108, "f", 67000.0, True),
    ("scl_slope", 112, "f", float("nan"), False), ("scl_slope", 112, "f", float("inf"), False),
    ("scl_slope", 112, "f", 1e38, True), ("scl_slope", 112, "f", 0.0, False),
    ("scl_inter", 116, "f", float("inf"), False), ("scl_inter", 116, "f", 3e38, True),
    ("qform_code", 252, "h", 1, False), ("quatern_b", 256, "f", float("nan"), False),
    ("sform_srow_x", 280, "4f", (float("nan"), 0.0, 0.0, 0.0), False),
    ("magic", 344, "4s", b"xx1\x00", True),
    ("sizeof_hdr", 0, "i", 0, False),  # nibabel repairs it
]


def _nifti_cases(data_dir: Path, out: Path, rng: np.random.Generator) -> list[Case]:
    raw = (data_dir / "nifti" / "nibabel" / "anatomical.nii").read_bytes()  # big-endian NIfTI-1, 33x41x25 int16
    endian = ">" if struct.unpack("<i", raw[:4])[0] != 348 else "<"
    cases: list[Case] = []
    for field, offset, fmt, value, must_skip in NIFTI1_LIES:
        data = bytearray(raw)
        values = value if isinstance(value, tuple) else (value,)
        struct.pack_into(endian + fmt, data, offset, *values)
        for compress in (False, True):
            name = f"anatomical__{field}_{_slug(value)}.nii" + (".gz" if compress else "")
            blob = gzip.compress(bytes(data), compresslevel=1) if compress else bytes(data)
            # Inside a gzip stream a larger claim (offset, type, dims) that stays within what deflate can
            # expand to is found only when the pixels are read: a per-file pixel error.
            skip = must_skip and not (compress and field in ("vox_offset", "datatype", "dim3", "dim2", "dim1") and
                                      value not in (0, 9999, 32, 128, 1536, -5, 32767))
            (out / name).write_bytes(blob)
            cases.append(Case(name, "nifti", field, "skip" if skip else "any"))
    # Truncations: the header promises more data than the file holds.
    for frac in (0.0, 0.3, 0.99):
        name = f"anatomical__truncated_{int(frac * 100)}pct.nii"
        (out / name).write_bytes(raw[: 352 + int((len(raw) - 352) * frac)])
        cases.append(Case(name, "nifti", "file length", "skip"))
    # A gzip file truncated mid-stream: only found when the pixels are read.
    gz = gzip.compress(raw, compresslevel=1)
    (out / "anatomical__gzip_cut.nii.gz").write_bytes(gz[: len(gz) // 2])
    cases.append(Case("anatomical__gzip_cut.nii.gz", "nifti", "gzip stream", "any"))
    # A decompression bomb: 8192 x 8192 x 64 int16 (8 GiB) of zeros, gzip-compressed to a few MiB would
    # take too long to build here; the same claim over a tiny stream is refused by the expansion bound.
    data = bytearray(raw[:352])
    struct.pack_into(endian + "4h", data, 40, 3, 8192, 8192, 64)
    (out / "bomb__8GiB_claim.nii.gz").write_bytes(gzip.compress(bytes(data) + b"\0" * 65536))
    cases.append(Case("bomb__8GiB_claim.nii.gz", "nifti", "dim (gzip bomb)", "skip"))
    return cases


# --------------------------------------------------------------------------------------------- NRRD / MetaImage
def _nrrd_source(data_dir: Path) -> tuple[np.ndarray, str]:
    import SimpleITK as sitk

    src = data_dir / "nrrd" / "pyradiomics" / "brain1_label.nrrd"
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(src)))[10:14, 100:132, 100:132].astype("<i4")  # (z, y, x)
    text = src.read_bytes().split(b"\n\n", 1)[0].decode("latin-1")
    lines = [ln for ln in text.splitlines() if ln.startswith(("space directions", "space origin", "space:", "kinds"))]
    return np.ascontiguousarray(volume), "\n".join(lines)


def _nrrd(fields: dict[str, str], geometry: str, payload: bytes) -> bytes:
    head = "NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in fields.items()) + geometry + "\n\n"
    return head.encode("latin-1") + payload


def _volume_cases(data_dir: Path, out: Path, rng: np.random.Generator) -> list[Case]:
    volume, geometry = _nrrd_source(data_dir)
    raw = volume.tobytes()
    good = {"type": "int", "dimension": "3", "sizes": "32 32 4", "endian": "little", "encoding": "raw"}
    lies: list[tuple[str, dict[str, str], bytes | None, bool]] = [
        ("sizes_huge", {"sizes": "40000 40000 4000"}, None, True),
        ("sizes_zero", {"sizes": "32 0 4"}, None, True),
        ("sizes_negative", {"sizes": "32 -32 4"}, None, True),
        ("sizes_text", {"sizes": "a b c"}, None, True),
        ("sizes_double_z", {"sizes": "32 32 8"}, None, True),
        ("type_garbage", {"type": "quaternion"}, None, True),
        ("type_double", {"type": "double"}, None, True),  # 8 bytes per voxel: the data are half as long
        ("type_block", {"type": "block"}, None, True),
        ("dimension_5", {"dimension": "5", "sizes": "32 32 4 1 1"}, None, False),
        ("dimension_mismatch", {"dimension": "2"}, None, True),
        ("encoding_gzip_on_raw", {"encoding": "gzip"}, None, False),
        ("encoding_bzip2_on_raw", {"encoding": "bzip2"}, None, False),
        ("encoding_hex_on_raw", {"encoding": "hex"}, None, False),
        ("encoding_garbage", {"encoding": "zstd-ultra"}, None, True),
        ("endian_big", {"endian": "big"}, None, False),
        ("data_file_missing", {"data file": "nowhere.raw"}, b"", True),
        ("data_file_dev_zero", {"data file": "/dev/zero"}, b"", True),
        ("data_file_self_loop", {"data file": "."}, b"", True),
        ("gzip_bomb_claim", {"encoding": "gzip", "sizes": "8192 8192 512"}, gzip.compress(b"\0" * 65536), True),
        ("gzip_truncated", {"encoding": "gzip"}, gzip.compress(raw)[:200], False),
        ("raw_truncated", {}, raw[: len(raw) // 2], True),
        ("space_directions_nan", {"space directions": "(nan,0,0) (0,nan,0) (0,0,nan)"}, None, False),
    ]
    cases: list[Case] = []
    for name, change, payload, must_skip in lies:
        fields = {**good, **change}
        geo = geometry if "space directions" not in change else "\n".join(
            ln for ln in geometry.splitlines() if not ln.startswith("space directions"))
        file = f"brain1_crop__{name}.nrrd"
        (out / file).write_bytes(_nrrd(fields, geo, raw if payload is None else payload))
        cases.append(Case(file, "nrrd", name, "skip" if must_skip else "any"))
    # MetaImage (.mha) with the same kinds of lies.
    mha_good = {"ObjectType": "Image", "NDims": "3", "DimSize": "32 32 4", "ElementType": "MET_INT",
                "ElementSpacing": "0.78 0.78 6.5", "BinaryData": "True", "BinaryDataByteOrderMSB": "False",
                "CompressedData": "False"}
    mha_lies = [
        ("DimSize_huge", {"DimSize": "50000 50000 5000"}, None, True),
        ("DimSize_zero", {"DimSize": "0 32 4"}, None, True),
        ("ElementType_garbage", {"ElementType": "MET_QUATERNION"}, None, True),
        ("ElementType_double", {"ElementType": "MET_DOUBLE"}, None, True),
        ("Compressed_on_raw", {"CompressedData": "True"}, None, False),
        ("Compressed_bomb", {"CompressedData": "True", "DimSize": "8192 8192 512"}, zlib.compress(b"\0" * 65536), True),
        ("ElementDataFile_dev_zero", {}, "/dev/zero", True),
        ("ElementDataFile_missing", {}, "gone.raw", True),
        ("NDims_7", {"NDims": "7", "DimSize": "32 32 4 1 1 1 1"}, None, False),
        ("raw_truncated", {}, raw[: len(raw) // 3], True),
        ("ElementSpacing_nan", {"ElementSpacing": "nan nan nan"}, None, False),
    ]
    for name, change, payload, must_skip in mha_lies:
        fields = {**mha_good, **change}
        data_file = payload if isinstance(payload, str) else "LOCAL"
        head = "".join(f"{k} = {v}\n" for k, v in fields.items()) + f"ElementDataFile = {data_file}\n"
        body = raw if payload is None else (b"" if isinstance(payload, str) else payload)
        file = f"brain1_crop__{name}.mha"
        (out / file).write_bytes(head.encode("latin-1") + body)
        cases.append(Case(file, "mha", name, "skip" if must_skip else "any"))
    return cases


# --------------------------------------------------------------------------------------------- PNG / JPEG
def _png_chunk(kind: bytes, payload: bytes, crc_ok: bool = True) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc if crc_ok else crc ^ 1)


def _png(width: int, height: int, depth: int, colour: int, idat: bytes, crc_ok: bool = True) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr, crc_ok) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _image_cases(data_dir: Path, out: Path, rng: np.random.Generator) -> list[Case]:
    from PIL import Image

    with np.load(data_dir / "medmnist" / "breastmnist.npz") as npz:
        pixels = np.asarray(npz["train_images"][0], dtype=np.uint8)  # a real 28x28 ultrasound image
    h, w = pixels.shape
    scanlines = b"".join(b"\0" + pixels[r].tobytes() for r in range(h))
    idat = zlib.compress(scanlines)
    cases: list[Case] = []
    lies = [
        ("size_bomb", dict(width=100000, height=100000), True),
        ("size_64k", dict(width=65535, height=65535), True),
        ("width_zero", dict(width=0), True),
        ("width_double", dict(width=2 * w), False),
        ("height_double", dict(height=2 * h), False),
        ("depth_3", dict(depth=3), True),
        ("depth_16", dict(depth=16), False),
        ("colour_type_5", dict(colour=5), True),
        ("colour_rgb", dict(colour=2), False),
        ("ihdr_crc_wrong", dict(crc_ok=False), False),
        ("idat_truncated", dict(idat=idat[: len(idat) // 2]), False),
        ("idat_garbage", dict(idat=bytes(rng.integers(0, 256, 200, dtype=np.uint8))), False),
        ("bomb_zeros_claim", dict(width=30000, height=30000, idat=zlib.compress(b"\0" * 65536)), True),
    ]
    for name, change, must_skip in lies:
        args = dict(width=w, height=h, depth=8, colour=0, idat=idat, crc_ok=True, **{})
        args.update(change)
        file = f"breast0__{name}.png"
        (out / file).write_bytes(_png(**args))
        cases.append(Case(file, "png", name, "skip" if must_skip else "any"))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    jpeg = buf.getvalue()
    sof = jpeg.find(b"\xff\xc0")
    for name, (hh, ww), must_skip in [("sof_65535", (65535, 65535), True), ("sof_zero", (0, w), True),
                                     ("sof_double", (2 * h, 2 * w), False)]:
        data = bytearray(jpeg)
        struct.pack_into(">HH", data, sof + 5, hh, ww)
        file = f"breast0__{name}.jpg"
        (out / file).write_bytes(bytes(data))
        cases.append(Case(file, "jpeg", name, "skip" if must_skip else "any"))
    (out / "breast0__jpeg_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    cases.append(Case("breast0__jpeg_truncated.jpg", "jpeg", "truncated", "any"))
    return cases


# --------------------------------------------------------------------------------------------- npz
def _npy(array: np.ndarray, header: dict | None = None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    if header is None:
        return buf.getvalue()
    text = repr(header).encode("latin-1")
    pad = 64 - (10 + len(text) + 1) % 64
    head = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head + array.tobytes()


def _zip(members: dict[str, bytes], deflate: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def _npz_cases(data_dir: Path, out: Path, rng: np.random.Generator) -> list[Case]:
    with np.load(data_dir / "medmnist" / "breastmnist.npz") as npz:
        images = np.asarray(npz["train_images"][:8])
        labels = np.asarray(npz["train_labels"][:8])
    good_labels = _npy(labels)
    cases: list[Case] = []

    def add(name: str, members: dict[str, bytes], must_skip: bool, deflate: bool = False) -> None:
        file = f"breast8__{name}.npz"
        (out / file).write_bytes(_zip(members, deflate))
        cases.append(Case(file, "npz", name, "skip" if must_skip else "any"))

    def header(shape, descr="|u1", fortran=False):
        return {"descr": descr, "fortran_order": fortran, "shape": shape}

    add("shape_huge", {"train_images.npy": _npy(images, header((8, 50000, 50000))), "train_labels.npy": good_labels}, True)
    add("shape_more_images", {"train_images.npy": _npy(images, header((800, 28, 28))), "train_labels.npy": good_labels}, True)
    add("shape_negative", {"train_images.npy": _npy(images, header((8, -28, 28))), "train_labels.npy": good_labels}, True)
    add("shape_zero_width", {"train_images.npy": _npy(images[:, :, :0], header((8, 28, 0))), "train_labels.npy": good_labels}, True)
    add("shape_6d", {"train_images.npy": _npy(images, header((8, 28, 28, 1, 1, 1))), "train_labels.npy": good_labels}, True)
    add("shape_2d", {"train_images.npy": _npy(images.reshape(8, -1)), "train_labels.npy": good_labels}, True)
    add("dtype_object", {"train_images.npy": _npy(images, header((8, 28, 28), "|O")), "train_labels.npy": good_labels}, True)
    add("dtype_complex", {"train_images.npy": _npy(images.astype(np.complex64)), "train_labels.npy": good_labels}, True)
    add("dtype_void", {"train_images.npy": _npy(images, header((8, 28, 28), "|V4"))}, True)
    add("dtype_float64_claim", {"train_images.npy": _npy(images, header((8, 28, 28), "<f8")), "train_labels.npy": good_labels}, True)
    add("dtype_float_nan", {"train_images.npy": _npy(np.full((8, 28, 28), np.nan, np.float32)), "train_labels.npy": good_labels}, False)
    add("fortran_order", {"train_images.npy": _npy(images, header((8, 28, 28), fortran=True)), "train_labels.npy": good_labels}, False)
    add("labels_object", {"train_images.npy": _npy(images), "train_labels.npy": _npy(labels, header((8, 1), "|O"))}, True)
    add("labels_huge", {"train_images.npy": _npy(images), "train_labels.npy": _npy(labels, header((2**40, 1), "<i8"))}, True)
    add("labels_float", {"train_images.npy": _npy(images), "train_labels.npy": _npy(labels.astype(np.float64))}, True)
    add("header_garbage", {"train_images.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 1,}    \n" + images.tobytes()}, True)
    add("magic_garbage", {"train_images.npy": b"NOTNUMPY" + images.tobytes()}, True)
    add("deflate_bomb_claim", {"train_images.npy": _npy(np.zeros((256, 512, 512), np.uint8)), "train_labels.npy": good_labels},
        True, deflate=True)
    # A member whose zip entry claims a larger uncompressed size than it holds (patched local + central header).
    blob = bytearray(_zip({"train_images.npy": _npy(images), "train_labels.npy": good_labels}))
    at = blob.find(b"PK\x01\x02")
    struct.pack_into("<I", blob, at + 24, 2**31)  # central directory: uncompressed size
    (out / "breast8__zip_size_lie.npz").write_bytes(bytes(blob))
    cases.append(Case("breast8__zip_size_lie.npz", "npz", "zip uncompressed size", "any"))
    (out / "breast8__zip_truncated.npz").write_bytes(bytes(_zip({"train_images.npy": _npy(images)}))[:-40])
    cases.append(Case("breast8__zip_truncated.npz", "npz", "zip truncated", "skip"))
    return cases


# --------------------------------------------------------------------------------------------- all
GENERATORS: dict[str, Callable[[Path, Path, np.random.Generator], list[Case]]] = {
    "dicom": _dicom_cases, "nifti": _nifti_cases, "volume": _volume_cases, "image": _image_cases, "npz": _npz_cases,
}


def write_cases(data_dir: Path, out: Path, seed: int = 20261201) -> list[Case]:
    """Write every hostile case into ``out`` (created); the same seed gives the same files."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    for generate in GENERATORS.values():
        cases.extend(generate(data_dir, out, rng))
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def _slug(value) -> str:
    if isinstance(value, (list, tuple)):
        return "_".join(_slug(v) for v in itertools.islice(value, 3))
    text = str(value).replace("-", "m").replace(".", "p").replace("+", "").replace(" ", "")
    return text or "empty"
