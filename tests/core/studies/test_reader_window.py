"""The budget's window comes from the file (WindowCenter/WindowWidth); bad or missing tags say so."""

from __future__ import annotations

import pydicom
import pytest

from salm_desktop.core.studies.loader import load_paths


def _copy_with(src, dst, **changes):
    ds = pydicom.dcmread(src)
    for key, value in changes.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(dst)


def test_real_ct_uses_its_own_window(dicom_dir):
    series = load_paths([dicom_dir / "ct_3slice_dcmqi" / "dicom"]).series[0]
    assert (series.intensity.low, series.intensity.high, series.intensity.unit) == (-160.0, 240.0, "HU")
    assert "C40/W400" in series.intensity.name
    assert series.intensity.delta_to_native(8 / 255) == pytest.approx(12.549, abs=1e-3)


@pytest.mark.parametrize("center, width, why", [("40", "0", "not positive"), ("40", "abc", "not numbers")])
def test_unusable_window_falls_back_loudly(dicom_dir, tmp_path, center, width, why):
    src = dicom_dir / "ct_3slice_dcmqi" / "dicom" / "01.dcm"
    ds = pydicom.dcmread(src)
    ds["WindowCenter"].value = center
    ds["WindowWidth"].VR = "LO" if width == "abc" else ds["WindowWidth"].VR
    ds["WindowWidth"].value = width
    ds.save_as(tmp_path / "01.dcm")
    series = load_paths([tmp_path]).series[0]
    assert (series.intensity.low, series.intensity.high) == (-160.0, 240.0)  # soft tissue W400, not -1000..1000
    assert any("01.dcm" in w and "window tags not usable" in w and why in w for w in series.warnings), series.warnings


def test_missing_window_uses_the_soft_tissue_default_and_names_it(dicom_dir, tmp_path):
    _copy_with(dicom_dir / "ct_3slice_dcmqi" / "dicom" / "01.dcm", tmp_path / "01.dcm", WindowCenter=None, WindowWidth=None)
    series = load_paths([tmp_path]).series[0]
    assert (series.intensity.low, series.intensity.high) == (-160.0, 240.0)
    assert "default: no window in the file" in series.intensity.name
