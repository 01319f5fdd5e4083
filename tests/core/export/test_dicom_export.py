"""Every DICOM series in shared/data/dicom protects and exports; independent tools accept the output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from salm_desktop.core.export.deid import DeidOptions
from salm_desktop.core.jobs import run_protect_job
from salm_desktop.core.protect import ProtectSettings, protect_series
from salm_desktop.core.studies import load_paths


SERIES_DIRS = [
    "ct_3slice_dcmqi/dicom",
    "hitachi_shoulder_mr/dicom",
    "nih_ge_epi_fmri/dicom",
    "nih_siemens_epi_mosaic/dicom",
    "qin_prostate_adc_mr/dicom",
    "pydicom_small/MR700_series_16x16",
]
SINGLE_FILES = [
    "pydicom_small/CT_small.dcm",
    "pydicom_small/MR_small.dcm",
    "pydicom_small/MR_small_RLE.dcm",
    "pydicom_small/MR_small_bigendian.dcm",
    "pydicom_small/MR_small_expb.dcm",
    "pydicom_small/MR_small_implicit.dcm",
    "pydicom_small/MR_small_jp2klossless.dcm",
    "pydicom_small/MR_small_jpeg_ls_lossless.dcm",
]
SETTINGS = dict(method="random", mask_ratio=0.2, seed=3, device="cpu")


def _pairs(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    if inp.is_file():
        return [(inp, out / inp.name)]
    return [(p, out / p.relative_to(inp)) for p in sorted(inp.rglob("*")) if p.is_file() and not p.name.endswith(".txt")]


# These tests check the derived-image bookkeeping with identity kept (links to the originals);
# the de-identified release (the default) is tested in test_deidentification.py.
KEEP_IDENTITY = DeidOptions(keep_identity=True)


@pytest.fixture(scope="module")
def series_job(dicom_dir: Path, tmp_path_factory, hashes):
    """One job over all multi-file series folders, one job per single-file encoding."""
    before = hashes(dicom_dir)
    base = tmp_path_factory.mktemp("dicom_export")
    jobs = {}
    for rel in SERIES_DIRS + SINGLE_FILES:
        inp = dicom_dir / rel
        out = base / rel.replace("/", "__")
        result = run_protect_job([inp], out, ProtectSettings(**SETTINGS), report=False, deid=KEEP_IDENTITY)
        jobs[rel] = (inp, out, result)
    yield jobs
    assert hashes(dicom_dir) == before, "the inputs were modified"


@pytest.mark.parametrize("rel", SERIES_DIRS + SINGLE_FILES)
def test_every_series_exports_and_dciodvfy_finds_no_new_errors(series_job, rel, dciodvfy):
    inp, out, result = series_job[rel]
    assert not result.skipped
    pairs = _pairs(inp, out)
    assert pairs and all(o.is_file() for _, o in pairs)
    assert len(result.files) == len(pairs)
    for src, dst in pairs[:12]:  # long series are alike file to file (the fMRI has 150): the first 12 of each
        new = dciodvfy(dst) - dciodvfy(src)
        assert not new, f"{dst.name}: new dciodvfy errors {new}"
        dump = subprocess.run(["dcmdump", "-q", str(dst)], capture_output=True, text=True)
        assert dump.returncode == 0, dump.stderr


@pytest.mark.parametrize("rel", SERIES_DIRS)
def test_dcentvfy_finds_output_series_consistent(series_job, rel):
    _, out, _ = series_job[rel]
    files = sorted(str(p) for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.json",))
    proc = subprocess.run(["dcentvfy", *files], capture_output=True, text=True)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
    assert proc.returncode == 0 and not errors, errors


def _sitk_series(folder: Path) -> dict[int, tuple]:
    reader = sitk.ImageSeriesReader()
    found = {}
    ids = reader.GetGDCMSeriesIDs(str(folder))
    for sid in ids:
        files = reader.GetGDCMSeriesFileNames(str(folder), sid)
        reader.SetFileNames(files)
        image = reader.Execute()
        found[len(files)] = (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return found


@pytest.mark.parametrize("rel", SERIES_DIRS)
def test_simpleitk_reads_back_same_geometry(series_job, rel):
    inp, out, _ = series_job[rel]
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    before, after = _sitk_series(inp), _sitk_series(out)
    assert before and before.keys() == after.keys()
    for n in before:
        size0, spacing0, origin0, direction0 = before[n]
        size1, spacing1, origin1, direction1 = after[n]
        assert size0 == size1
        np.testing.assert_allclose(spacing1, spacing0, atol=1e-6)
        np.testing.assert_allclose(origin1, origin0, atol=1e-6)
        np.testing.assert_allclose(direction1, direction0, atol=1e-9)


KEEP = ["StudyInstanceUID", "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
        "RescaleSlope", "RescaleIntercept", "BitsStored", "BitsAllocated", "PixelRepresentation", "Rows", "Columns",
        "PhotometricInterpretation", "Modality", "SOPClassUID", "InstanceNumber", "NumberOfFrames"]


@pytest.mark.parametrize("rel", ["ct_3slice_dcmqi/dicom", "nih_siemens_epi_mosaic/dicom", "pydicom_small/MR_small_bigendian.dcm",
                                 "hitachi_shoulder_mr/dicom"])
def test_derived_attributes_and_unchanged_attributes(series_job, rel):
    inp, out, result = series_job[rel]
    new_series = set()
    manifest = json.loads((out / "manifest.json").read_text())
    for src, dst in _pairs(inp, out):
        a, b = pydicom.dcmread(src), pydicom.dcmread(dst)
        assert b.SOPInstanceUID != a.SOPInstanceUID
        assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
        assert b.SeriesInstanceUID != a.SeriesInstanceUID
        new_series.add(b.SeriesInstanceUID)
        assert manifest["uid_map"][a.SOPInstanceUID] == b.SOPInstanceUID
        assert manifest["uid_map"][a.SeriesInstanceUID] == b.SeriesInstanceUID
        assert b.ImageType[0] == "DERIVED" and list(b.ImageType[1:]) == list(a.ImageType[1:])
        assert "method=random" in b.DerivationDescription and "epsilon=" in b.DerivationDescription
        assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
        assert b.SourceImageSequence[0].ReferencedSOPClassUID == a.SOPClassUID
        assert str(b.SeriesDescription).endswith("(protected)")
        for name in KEEP:
            if name in a:
                assert b.get(name) == a.get(name), name
        private_a = {e.tag: e.value for e in a if e.tag.is_private and e.VR not in ("UN", "OB", "OW")}
        private_b = {e.tag: e.value for e in b if e.tag.is_private and e.VR not in ("UN", "OB", "OW")}
        assert private_a.keys() <= {e.tag for e in b if e.tag.is_private}
        for tag, value in private_b.items():
            if tag in private_a and private_a[tag] is not None:
                assert value == private_a[tag], f"private tag {tag} changed"
        assert b.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        pa, pb = a.pixel_array.astype(np.int64), b.pixel_array.astype(np.int64)
        assert pa.shape == pb.shape and a.pixel_array.dtype.newbyteorder("=") == b.pixel_array.dtype.newbyteorder("=")
        assert np.any(pa != pb), "pixels did not change"
        bits = int(a.BitsStored)
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(a.PixelRepresentation) else (0, 2**bits - 1)
        assert pb.min() >= lo and pb.max() <= hi
    assert len(new_series) == 1


@pytest.mark.parametrize("rel,syntax", [("pydicom_small/MR_small_RLE.dcm", pydicom.uid.RLELossless),
                                        ("pydicom_small/MR_small_jp2klossless.dcm", pydicom.uid.JPEG2000Lossless),
                                        ("pydicom_small/MR_small_jpeg_ls_lossless.dcm", None)])
def test_lossless_sources_keep_their_syntax_where_an_encoder_exists(series_job, rel, syntax):
    from pydicom.pixels import get_encoder

    inp, out, _ = series_job[rel]
    b = pydicom.dcmread(out / inp.name)
    source = pydicom.dcmread(inp).file_meta.TransferSyntaxUID
    if syntax is None:
        syntax = source if get_encoder(source).is_available else pydicom.uid.ExplicitVRLittleEndian
    assert b.file_meta.TransferSyntaxUID == syntax
    assert "LossyImageCompression" not in b or b.LossyImageCompression == "00"


def _by_location(loaded) -> dict[tuple, tuple]:
    out = {}
    for series in loaded.series:
        for i, s in enumerate(series.samples):
            out[(Path(s.source.path).name, s.source.frame, s.meta.get("mosaic_tile"))] = (series, i)
    return out


@pytest.mark.parametrize("rel", ["ct_3slice_dcmqi/dicom", "nih_siemens_epi_mosaic/dicom", "hitachi_shoulder_mr/dicom",
                                 "pydicom_small/MR_small_expb.dcm", "pydicom_small/MR_small_jp2klossless.dcm"])
def test_round_trip_reloaded_export_equals_protected(series_job, rel):
    inp, out, _ = series_job[rel]
    loaded = load_paths([inp])
    expected = protect_series(loaded.series, ProtectSettings(**SETTINGS))
    try:
        back = _by_location(load_paths([out]))
        n = 0
        for series in loaded.series:
            for i, s in enumerate(series.samples):
                key = (Path(s.source.path).name, s.source.frame, s.meta.get("mosaic_tile"))
                bs, bi = back[key]
                np.testing.assert_array_equal(bs.samples[bi].read(), expected.protected(series.id, i))
                n += 1
        assert n == sum(len(s.samples) for s in loaded.series)
    finally:
        expected.close()


def test_rerun_gives_the_same_uids_and_pixels(series_job, dicom_dir, tmp_path):
    inp, out, first = series_job["hitachi_shoulder_mr/dicom"]
    again = run_protect_job([inp], tmp_path / "again", ProtectSettings(**SETTINGS), report=False, deid=KEEP_IDENTITY)
    assert again.uid_map == first.uid_map
    for src, dst in _pairs(inp, out):
        assert (tmp_path / "again" / dst.name).read_bytes() == dst.read_bytes()
    other = run_protect_job([inp], tmp_path / "other", ProtectSettings(**{**SETTINGS, "seed": 4}), report=False,
                            deid=KEEP_IDENTITY)
    assert set(other.uid_map.values()).isdisjoint(first.uid_map.values())
