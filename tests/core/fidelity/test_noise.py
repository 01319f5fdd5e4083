"""Noise level and periodicity checks, on synthetic patterns with known answers and on the real CT."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from salm_desktop.core.fidelity.noise import highpass, noise_sd, periodicity
from salm_desktop.core.model import IntensityMap
from salm_desktop.core.protect.masks import body_mask


def test_noise_sd_recovers_white_noise_on_structure():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:128, :128]
    structure = 200.0 * ((yy - 64) ** 2 + (xx - 64) ** 2 < 40**2) + 0.5 * xx  # an edge and a ramp
    image = structure + rng.normal(0, 12.0, structure.shape)
    assert noise_sd(image) == pytest.approx(12.0, rel=0.1)
    assert highpass(np.ones((16, 16))).std() == pytest.approx(0.0, abs=1e-12)


def test_periodicity_flags_a_period_4_grid_and_passes_white_noise():
    rng = np.random.default_rng(2)
    white = rng.choice([-1.0, 0.0, 1.0], size=(256, 256), p=[0.1, 0.8, 0.1])
    assert not periodicity(white)["periodic"]
    grid = white.copy()
    grid[:, ::4] += rng.choice([-1.0, 1.0], size=(256, 64)) * 0.0 + 1.0  # a column grid of period 4
    found = periodicity(grid)
    assert found["periodic"] and found["lag"] in (4, 8, 12, 16) and found["axis"] == "horizontal"
    assert found["excess"] > 0.03


def _hu(path):
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_real_ct_noise_level(dicom_dir):
    ct = _hu(dicom_dir / "ct_3slice_dcmqi" / "dicom" / "02.dcm")
    sd = noise_sd(ct, body_mask(ct, IntensityMap.for_window(40, 400, "HU")))
    assert 5.0 < sd < 60.0  # a clinical abdominal CT: tens of HU in soft tissue


def test_protected_real_ct_respects_budget_and_shows_no_grid(dicom_dir):
    """Default settings (short run) on the real CT at its own window C40/W400: the largest change is
    8/255 of 400 HU (+1 HU rounding), air outside the patient is untouched, no periodic pattern."""
    from salm_desktop.core.protect import ProtectSettings, protect_series
    from salm_desktop.core.studies.loader import load_paths

    series = load_paths([dicom_dir / "ct_3slice_dcmqi" / "dicom"]).series[0]
    assert (series.intensity.low, series.intensity.high) == (-160.0, 240.0)
    result = protect_series([series], ProtectSettings(labels="clusters", max_rounds=1, seed=0, device="cpu"))
    try:
        for i, sample in enumerate(series.samples):
            orig = sample.read().astype(np.float64)
            diff = result.protected(series.id, i) - orig
            assert np.abs(diff).max() <= 8 / 255 * 400 + 1.0
            air = (orig >= -1500) & (orig <= -900)
            assert np.count_nonzero(diff[air]) == 0
            bone = orig > 240  # outside the window: neither clipped flat nor moved by more than the budget
            assert np.abs(diff[bone]).max(initial=0) <= 8 / 255 * 400 + 1.0
            assert np.array_equal(np.unique(orig[bone]).size > 1, np.unique((orig + diff)[bone]).size > 1)
            found = periodicity(diff)
            assert not found["periodic"], found
    finally:
        result.close()


def test_label_map_that_fits_no_series_is_a_clear_error(dicom_dir, tmp_path):
    from salm_desktop.core.jobs import JobError, run_protect_job
    from salm_desktop.core.protect import ProtectSettings

    ct = dicom_dir / "pydicom_small" / "CT_small.dcm"
    roi = dicom_dir / "ct_3slice_dcmqi" / "seg" / "liver_seg.nrrd"  # another patient's geometry
    with pytest.raises(JobError, match="does not fit any protected series"):
        run_protect_job([ct], tmp_path / "out", ProtectSettings(method="random", device="cpu"), roi=roi)
    assert not (tmp_path / "out").exists()
