"""DICOM loading on the real series in ../shared/data/dicom."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from salm_desktop.core.model import IntensityMap, Series
from salm_desktop.core.studies import load_paths


def _only_series(path) -> Series:
    result = load_paths([path])
    assert len(result.series) == 1, [(s.kind, s.description) for s in result.series]
    return result.series[0]


def _as_nifti(series: Series, t: int | None = None) -> nib.Nifti1Image:
    """Our samples + DICOM geometry as a RAS NIfTI image (independent of dcm2niix's axis choices)."""
    samples = series.samples
    dims = series.meta["dims"]
    if len(dims) == 2:
        _, z = dims
        samples = samples[t * z : (t + 1) * z]
    vol = np.stack([s.read() for s in samples])  # (Z, rows, cols)
    g0, g1 = samples[0].geometry, samples[-1].geometry
    row_dir, col_dir = np.array(g0.orientation[:3]), np.array(g0.orientation[3:])
    d_row, d_col = g0.spacing
    step = (np.array(g1.position) - np.array(g0.position)) / max(len(samples) - 1, 1)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * d_col  # array axis i = column index
    affine[:3, 1] = col_dir * d_row  # array axis j = row index
    affine[:3, 2] = step
    affine[:3, 3] = g0.position
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    return nib.Nifti1Image(vol.transpose(2, 1, 0), affine)


def _assert_same_volume(ours: nib.Nifti1Image, ref_data: np.ndarray, ref_affine: np.ndarray) -> None:
    a = nib.as_closest_canonical(ours)
    b = nib.as_closest_canonical(nib.Nifti1Image(ref_data, ref_affine))
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3)


def test_ge_fmri_is_4d_and_matches_dcm2niix(dicom_dir):
    series = _only_series(dicom_dir / "nih_ge_epi_fmri" / "dicom")
    assert series.kind == "dicom" and series.modality == "MR"
    assert series.meta["dims"] == (10, 15)
    assert len(series.samples) == 150
    assert series.sample_shape == (64, 64)
    assert series.samples[0].key == "t0000/z0000" and series.samples[16].key == "t0001/z0001"
    assert series.samples[16].source.index == (1, 1)
    assert series.meta["slice_spacing"] == pytest.approx(5.0)
    assert any("4D" in w for w in series.warnings)
    # InstanceNumber 1-15 are time point 1, 16-30 time point 2, ...
    assert sorted(s.meta["instance_number"] for s in series.samples[:15]) == list(range(1, 16))
    assert sorted(s.meta["instance_number"] for s in series.samples[15:30]) == list(range(16, 31))

    ref = nib.load(dicom_dir / "nih_ge_epi_fmri" / "ref_dcm2niix" / "DCM2NIIX_regression_test_4.nii")
    ref_data = np.asarray(ref.dataobj)
    assert ref_data.shape == (64, 64, 15, 10)
    for t in (0, 4, 9):
        _assert_same_volume(_as_nifti(series, t), ref_data[..., t], ref.affine)


def test_hitachi_shoulder_matches_ground_truth(dicom_dir):
    series = _only_series(dicom_dir / "hitachi_shoulder_mr" / "dicom")
    assert series.meta["dims"] == (4,)
    assert series.samples[0].stored.maximum == 2047  # BitsStored 12, signed
    ref = nib.load(dicom_dir / "hitachi_shoulder_mr" / "001_ground_truth.nii.gz")
    _assert_same_volume(_as_nifti(series), np.asarray(ref.dataobj), ref.affine)


def test_siemens_mosaic_split_matches_dcm2niix(dicom_dir):
    series = _only_series(dicom_dir / "nih_siemens_epi_mosaic" / "dicom")
    assert series.meta["dims"] == (2, 5)
    assert series.sample_shape == (72, 72)
    ref = nib.load(dicom_dir / "nih_siemens_epi_mosaic" / "ref_dcm2niix" / "EPI_PE=AP_3.nii")
    ref_data = np.asarray(ref.dataobj)
    for t in (0, 1):
        _assert_same_volume(_as_nifti(series, t), ref_data[..., t], ref.affine)


def test_oblique_prostate_sorts_along_normal(dicom_dir):
    series = _only_series(dicom_dir / "qin_prostate_adc_mr" / "dicom")
    assert len(series.samples) == 20
    iop = np.array(series.samples[0].geometry.orientation)
    assert abs(iop[4]) < 0.99  # really oblique
    normal = np.cross(iop[:3], iop[3:])
    proj = np.array([np.dot(s.geometry.position, normal) for s in series.samples])
    steps = np.diff(proj)
    assert np.all(steps > 0)
    # The step along the normal is SpacingBetweenSlices (3.0 mm); 2.954 mm is only its z component.
    np.testing.assert_allclose(steps, 3.0, atol=0.01)
    z_steps = np.diff([s.geometry.position[2] for s in series.samples])
    np.testing.assert_allclose(z_steps, 2.954, atol=0.01)
    assert series.meta["slice_spacing"] == pytest.approx(3.0, abs=0.01)
    assert not [w for w in series.warnings if "gap" in w or "uneven" in w]
    # Here z order happens to agree with the normal order; see test_load_edge_cases for a stack
    # where it does not.
    assert [s.key for s in series.samples] == [f"z{i:04d}" for i in range(20)]


def test_ct_slices_in_hounsfield_units(dicom_dir):
    series = _only_series(dicom_dir / "ct_3slice_dcmqi" / "dicom")
    assert series.modality == "CT"
    assert series.intensity == IntensityMap.for_window(40, 400, "HU")  # the file's own window C40/W400
    assert series.meta["intensity_unit"] == "HU"
    z = [s.geometry.position[2] for s in series.samples]
    assert z == sorted(z)  # sorted along the normal (0,0,1)
    np.testing.assert_allclose(np.diff(z), 1.0, atol=1e-3)
    sample = series.samples[1]
    assert sample.stored.intercept == -1024 and sample.stored.slope == 1
    native = sample.read()
    assert native.dtype == np.float32 and native.shape == (512, 512)
    corner = native[5:40, 5:40]  # outside the body, inside the reconstruction circle? padding is -3024
    assert corner.min() >= -3024
    # Air in front of the body: a row near the top centre of the image is about -1000 HU.
    top = native[60:80, 236:276]
    assert -1100 < float(np.median(top)) < -900
    # Soft tissue in the centre is around 0..100 HU.
    centre = native[236:276, 236:276]
    assert -200 < float(np.median(centre)) < 200
    # Native = stored + intercept.
    from pydicom import dcmread

    raw = dcmread(sample.source.path).pixel_array.astype(np.float32)
    np.testing.assert_array_equal(native, raw - 1024)


def test_ct_small_in_hu(dicom_dir):
    result = load_paths([dicom_dir / "pydicom_small" / "CT_small.dcm"])
    (series,) = result.series
    assert series.modality == "CT" and series.intensity.unit == "HU"
    native = series.samples[0].read()
    from pydicom import dcmread

    ds = dcmread(dicom_dir / "pydicom_small" / "CT_small.dcm")
    np.testing.assert_array_equal(native, ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert native.min() < -800  # air after the -1024 intercept


ENCODINGS = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
]


def test_seven_mr_small_encodings_decode_identically(dicom_dir):
    arrays = {}
    syntaxes = set()
    for name in ENCODINGS:
        (series,) = load_paths([dicom_dir / "pydicom_small" / name]).series
        arrays[name] = series.samples[0].read()
        syntaxes.add(series.meta["transfer_syntax"])
        assert series.samples[0].stored.dtype == "int16"
    assert len(syntaxes) == 6  # expb and bigendian share Explicit VR Big Endian
    reference = arrays["MR_small.dcm"]
    assert reference.shape == (64, 64) and reference.max() > reference.min()
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, reference, err_msg=name)


def test_same_instance_in_seven_encodings_is_one_sample(dicom_dir):
    result = load_paths([dicom_dir / "pydicom_small"])
    mr = [s for s in result.series if s.modality == "MR" and s.sample_shape == (64, 64)]
    assert len(mr) == 1 and len(mr[0].samples) == 1
    assert any("6 duplicate instance(s)" in w for w in mr[0].warnings)
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert set(reasons) == set(ENCODINGS) - {"MR_small.dcm"}
    assert reasons["MR_small_RLE.dcm"] == "duplicate of MR_small.dcm (same SOPInstanceUID); loaded once"


def test_mixed_orientation_set_is_kept_as_2d_images(dicom_dir):
    series = _only_series(dicom_dir / "pydicom_small" / "MR700_series_16x16")
    assert len(series.samples) == 7 and series.meta["dims"] is None
    assert any("mixed orientation" in w for w in series.warnings)
    assert [s.meta["instance_number"] for s in series.samples] == list(range(1, 8))


def test_seg_is_skipped_with_reason(dicom_dir):
    result = load_paths([dicom_dir / "ct_3slice_dcmqi"])
    reasons = {s.path.name: s.reason for s in result.skipped}
    assert reasons["liver.dcm"] == "DICOM SEG (Segmentation Storage) is not an image series"
    dicom = [s for s in result.series if s.kind == "dicom"]
    assert len(dicom) == 1 and len(dicom[0].samples) == 3
    # LICENSE.txt next to the DICOM files is neither a series nor an error.
    assert not [s for s in result.skipped if s.path.name.startswith("LICENSE")]


def test_readme_next_to_dicom_is_not_an_error(dicom_dir):
    result = load_paths([dicom_dir / "nih_ge_epi_fmri" / "dicom"])
    assert result.skipped == []
    assert len(result.series) == 1


def test_geometry_and_meta_for_writers(dicom_dir):
    series = _only_series(dicom_dir / "qin_prostate_adc_mr" / "dicom")
    for key in ("series_uid", "study_uid", "frame_of_reference_uid", "transfer_syntax", "dims", "slice_spacing"):
        assert key in series.meta
    sample = series.samples[0]
    assert sample.geometry.spacing == pytest.approx((0.7031, 0.7031))
    assert len(sample.geometry.orientation) == 6 and len(sample.geometry.position) == 3
    assert sample.meta["sop_instance_uid"]
    assert sample.source.frame is None
    # Series ids are short hashes, never UIDs or patient ids.
    assert len(series.id) == 10 and series.id not in series.meta["series_uid"]
    assert isinstance(series.intensity, IntensityMap) and series.intensity.high > series.intensity.low
