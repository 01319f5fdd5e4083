"""Fuzz the loader with mutated real DICOM files (issue 7, hardening).

Every mutation must either load (and its pixels read, or fail with a message naming the file) or be
skipped with a reason: never a crash, a hang or a memory blow-up. The loading runs in a subprocess
under an address-space limit and a timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless

WORKER = Path(__file__).with_name("fuzz_worker.py")
PER_FILE_SECONDS = 10.0

SOURCES = [
    "pydicom_small/CT_small.dcm",
    "pydicom_small/MR_small.dcm",
    "pydicom_small/MR_small_jp2klossless.dcm",
    "pydicom_small/MR_small_jpeg_ls_lossless.dcm",
    "pydicom_small/MR_small_RLE.dcm",
    "pydicom_small/MR_small_bigendian.dcm",
    "pydicom_small/MR_small_implicit.dcm",
    "hitachi_shoulder_mr/dicom/001.dcm",
    "nih_ge_epi_fmri/dicom/axial_epi_fmri_interleaved_i_to_s-00001.dcm",
]


def _byte_mutations(raw: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    out: dict[str, bytes] = {"empty": b"", "preamble_only": raw[:132], "last_byte_cut": raw[:-1]}
    for frac in (0.02, 0.1, 0.3, 0.6, 0.95):
        out[f"truncated_{int(frac * 100)}pct"] = raw[: int(len(raw) * frac)]
    for n_flips in (1, 8, 64, 512):
        for variant in range(2):
            data = bytearray(raw)
            header_only = variant == 0
            span = min(len(data), 2048) if header_only else len(data)
            for pos in rng.integers(132, span, size=n_flips):
                data[int(pos)] ^= int(rng.integers(1, 256))
            out[f"flipped_{n_flips}_{'header' if header_only else 'anywhere'}"] = bytes(data)
    # A wrong length on the pixel data element (explicit VR LE: tag, VR OW/OB, 2 reserved, 4-byte length).
    tag = raw.rfind(b"\xe0\x7f\x10\x00")
    if tag > 0:
        for name, length in (("huge", 0xFFFFFFF0), ("tiny", 2), ("odd", 12345)):
            data = bytearray(raw)
            if raw[tag + 4 : tag + 6] in (b"OW", b"OB"):
                data[tag + 8 : tag + 12] = length.to_bytes(4, "little")
            else:  # implicit VR: 4-byte length right after the tag
                data[tag + 4 : tag + 8] = length.to_bytes(4, "little")
            out[f"pixel_length_{name}"] = bytes(data)
    return out


def _header_mutations(path: Path) -> dict[str, "pydicom.Dataset"]:
    def fresh() -> pydicom.Dataset:
        return pydicom.dcmread(path)

    cases: dict[str, pydicom.Dataset] = {}

    def case(name, change):
        ds = fresh()
        change(ds)
        cases[name] = ds

    case("rows_cols_absurd", lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)))
    case("frames_absurd", lambda ds: setattr(ds, "NumberOfFrames", 10**9))
    case("frames_zero", lambda ds: setattr(ds, "NumberOfFrames", 0))
    case("bits_allocated_7", lambda ds: setattr(ds, "BitsAllocated", 7))
    case("bits_stored_40", lambda ds: setattr(ds, "BitsStored", 40))
    case("samples_per_pixel_3", lambda ds: setattr(ds, "SamplesPerPixel", 3))
    case("photometric_nonsense", lambda ds: setattr(ds, "PhotometricInterpretation", "NONSENSE"))
    case("pixel_representation_5", lambda ds: setattr(ds, "PixelRepresentation", 5))
    case("no_pixel_data", lambda ds: delattr(ds, "PixelData"))
    case("no_rows", lambda ds: delattr(ds, "Rows"))
    case("pixel_data_half", lambda ds: setattr(ds, "PixelData", ds.PixelData[: len(ds.PixelData) // 2]))
    case("rescale_slope_zero", lambda ds: setattr(ds, "RescaleSlope", 0))
    case("position_two_values", lambda ds: setattr(ds, "ImagePositionPatient", [1.0, 2.0]))
    case("orientation_zero", lambda ds: setattr(ds, "ImageOrientationPatient", [0, 0, 0, 0, 0, 0]))
    case("spacing_negative", lambda ds: setattr(ds, "PixelSpacing", [-1.0, 0.0]))
    case("syntax_contradicts_data", lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", JPEG2000Lossless))
    return cases


def _write_cases(data_dir: Path, out: Path) -> list[Path]:
    rng = np.random.default_rng(20261128)
    paths: list[Path] = []
    for rel in SOURCES:
        src = data_dir / "dicom" / rel
        stem = src.stem.replace(".", "_")
        for name, blob in _byte_mutations(src.read_bytes(), rng).items():
            target = out / f"{stem}__{name}.dcm"
            target.write_bytes(blob)
            paths.append(target)
        for name, ds in _header_mutations(src).items():
            target = out / f"{stem}__{name}.dcm"
            try:
                ds.save_as(target, enforce_file_format=False)
            except Exception:  # pydicom refuses to write some contradictions: that mutation is moot
                continue
            paths.append(target)
    return paths


def test_mutated_dicom_loads_or_is_skipped_with_reason(data_dir: Path, tmp_path: Path) -> None:
    cases = _write_cases(data_dir, tmp_path)
    assert len(cases) > 200
    proc = subprocess.run(
        [sys.executable, str(WORKER), *map(str, cases)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"loader crashed: {proc.stderr[-3000:]}"
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    records = [r for r in lines if "path" in r]
    assert len(records) == len(cases), "the worker stopped early"

    outcomes = {r["outcome"] for r in records}
    assert "skipped" in outcomes and "loaded" in outcomes
    for record in records:
        assert record["outcome"] in ("loaded", "skipped", "read_error"), record
        assert record["seconds"] < PER_FILE_SECONDS, record
        if record["outcome"] == "skipped":
            assert record["reason"].strip(), record
        if record["outcome"] == "read_error":
            assert record["path"] in record["reason"], record  # the message names the file
    peak = lines[-1]["max_rss_mb"]
    assert peak < 2500, f"loader peak memory {peak:.0f} MB"

    by_name = {r["path"]: r for r in records}
    # Cases with an unambiguous answer: nothing loadable in them.
    for stem in ("CT_small", "MR_small"):
        for name in ("empty", "preamble_only", "no_pixel_data", "no_rows", "rows_cols_absurd", "frames_absurd"):
            record = by_name.get(f"{stem}__{name}.dcm")
            if record is not None:
                assert record["outcome"] in ("skipped", "read_error"), record
