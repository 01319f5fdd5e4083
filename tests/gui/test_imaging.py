"""Window/level, presets, overlays and frames (no widgets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from salm_desktop.core.model import IntensityMap, Sample, Series, SourceRef, StoredFormat
from salm_desktop.gui import imaging
from salm_desktop.gui.frames import SeriesFrames, dicom_window


def test_apply_window_maps_center_and_edges():
    image = np.array([[-200.0, 40.0, 240.0, 1000.0]], np.float32)
    out = imaging.apply_window(image, imaging.Window(40, 400))
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 128, 255, 255]]  # -160 is the low edge, 240 the high edge
    assert imaging.apply_window(image, imaging.Window(40, 400), invert=True).tolist() == [[255, 128, 0, 0]]


def test_ct_presets_file_window_and_auto():
    names = imaging.presets_for("CT", has_file_window=True)
    assert names[0] == imaging.FILE_WINDOW and "CT lung" in names and "CT bone" in names
    assert "CT lung" not in imaging.presets_for("MR", has_file_window=False)
    assert imaging.presets_for("MR", has_file_window=False)[:2] == [imaging.AUTO_WINDOW, imaging.HIGH_CONTRAST]
    image = np.linspace(0, 100, 101, dtype=np.float32).reshape(1, -1)
    assert imaging.resolve_preset("CT lung", image) == imaging.Window(-600, 1500)
    assert imaging.resolve_preset(imaging.FILE_WINDOW, image, {"window_center": "600", "window_width": [1600, 20]}) \
        == imaging.Window(600, 1600)
    auto = imaging.resolve_preset(imaging.AUTO_WINDOW, image)
    assert auto.low == pytest.approx(1.0) and auto.high == pytest.approx(99.0)
    high = imaging.resolve_preset(imaging.HIGH_CONTRAST, image)
    assert (high.low, high.high) == (pytest.approx(5.0), pytest.approx(95.0))
    assert imaging.resolve_preset(imaging.PROTECTION_WINDOW, image, None, (-1000, 1000)) == imaging.Window(0, 2000)
    assert imaging.file_window({"window_center": 1, "window_width": 0}) is None


def test_file_window_read_from_dicom_header(dicom_dir):
    assert dicom_window(dicom_dir / "ct_3slice_dcmqi" / "dicom" / "01.dcm") == (40.0, 400.0)
    assert dicom_window(dicom_dir / "pydicom_small" / "MR_small.dcm") == (600.0, 1600.0)
    assert dicom_window(dicom_dir / "pydicom_small" / "CT_small.dcm") is None


def test_monochrome1_flag_and_overlay():
    assert imaging.is_monochrome1({"photometric": "MONOCHROME1"}) and not imaging.is_monochrome1({})
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    rgba = imaging.mask_overlay(mask, opacity=0.5)
    assert rgba.shape == (3, 3, 4) and rgba[1, 1, 3] == 128 and rgba[0, 0, 3] == 0 and rgba[1, 1, 0] == 255


def test_difference_map_colours_by_sign():
    original = np.zeros((1, 3), np.float32)
    protected = np.array([[5.0, 0.0, -10.0]], np.float32)
    rgb, scale = imaging.difference_rgb(original, protected)
    assert scale == 10.0
    assert rgb[0, 0, 0] == 128 and rgb[0, 0, 2] == 0  # brighter -> red, half of the scale
    assert rgb[0, 1].tolist() == [0, 0, 0]  # unchanged -> black
    assert rgb[0, 2, 2] == 255 and rgb[0, 2, 0] == 0  # darker -> blue


def _series(shapes):
    samples = [Sample(f"k{i}", shape, (lambda i=i, shape=shape: np.full(shape, i, np.float32) + np.arange(shape[0]).reshape(
        (-1,) + (1,) * (len(shape) - 1))), StoredFormat.for_dtype("uint8"), SourceRef(Path(f"/v/{i}")), label=i % 2)
        for i, shape in enumerate(shapes)]
    return Series("vol", "npz", "OT", samples, IntensityMap.for_uint8(), Path("/v"))


def test_frames_of_2d_and_3d_samples():
    frames = SeriesFrames(_series([(4, 5, 6), (4, 5, 6)]))
    assert len(frames) == 8  # two volumes of 4 slices
    assert frames.frame(5).shape == (5, 6)
    assert frames.frame(5)[0, 0] == 1 + 1  # volume 1, slice 1
    assert frames.sample_index(5) == 1 and "slice 2" in frames.describe(5)
    mask = np.zeros((4, 5, 6), bool)
    mask[1] = True
    assert frames.frame_mask(5, mask).all() and not frames.frame_mask(6, mask).any()
    flat = SeriesFrames(_series([(7, 7)] * 3))
    assert len(flat) == 3 and flat.frame(2)[3, 0] == 2 + 3
    assert flat.clamp(99) == 2 and flat.clamp(-5) == 0


def test_frames_read_lazily_with_a_small_cache():
    calls = []
    series = _series([(3, 3)] * 20)
    for s in series.samples:
        inner = s.reader
        s.reader = (lambda inner=inner, key=s.key: (calls.append(key), inner())[1])
    frames = SeriesFrames(series, cache_size=2)
    assert calls == []  # building the frame list reads no pixels
    frames.frame(0)
    frames.frame(0)
    frames.frame(1)
    assert calls == ["k0", "k1"]
