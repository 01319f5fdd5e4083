"""Slice viewers on a real CT series: scroll, zoom, pan, window/level, overlay, synchronization."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent

from salm_desktop.core.studies import load_paths
from salm_desktop.gui import imaging
from salm_desktop.gui.frames import SeriesFrames
from salm_desktop.gui.viewer import SliceViewer, ViewState


@pytest.fixture(scope="module")
def ct_series(dicom_dir):
    result = load_paths([dicom_dir / "ct_3slice_dcmqi" / "dicom"])
    (series,) = result.series
    assert series.modality == "CT" and len(series.samples) == 3
    return series


def _wheel(view, dy: int, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    pos = QPointF(view.viewport().rect().center())
    event = QWheelEvent(pos, view.mapToGlobal(pos.toPoint()), QPoint(0, 0), QPoint(0, dy),
                        Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    view.wheelEvent(event)


def test_viewer_scrolls_windows_and_uses_the_file_window(qtbot, ct_series):
    viewer = SliceViewer(title="t")
    qtbot.addWidget(viewer)
    viewer.resize(500, 500)
    viewer.show()
    viewer.set_frames(SeriesFrames(ct_series))
    assert viewer.preset.currentText() == imaging.FILE_WINDOW  # the CT files carry WindowCenter 40 / Width 400
    assert viewer.state.window == imaging.Window(40, 400)
    assert viewer.slider.maximum() == 2
    _wheel(viewer.view, -120)
    assert viewer.state.frame == 1 and viewer.slider.value() == 1
    _wheel(viewer.view, -120)
    _wheel(viewer.view, -120)
    assert viewer.state.frame == 2  # clamped at the last slice
    before = viewer.view.image_array()
    viewer.choose_preset("CT lung")
    assert viewer.state.window == imaging.Window(-600, 1500)
    assert (viewer.center_box.value(), viewer.width_box.value()) == (-600, 1500)
    after = viewer.view.image_array()
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 5  # the picture really changed
    viewer.view.window_drag.emit(40.0, -20.0)  # right drag: wider window, lower centre
    assert viewer.state.window.width > 1500 and viewer.state.window.center < -600


def test_two_viewers_share_slice_zoom_pan_and_window(qtbot, ct_series):
    state = ViewState()
    left, right = SliceViewer(state), SliceViewer(state)
    for v in (left, right):
        qtbot.addWidget(v)
        v.resize(400, 400)
        v.show()
    frames = SeriesFrames(ct_series)
    left.set_frames(frames)
    right.set_frames(SeriesFrames(ct_series), keep_window=True)
    _wheel(left.view, -120)
    assert right.state.frame == 1 and right.slider.value() == 1
    _wheel(left.view, 240, Qt.KeyboardModifier.ControlModifier)  # zoom in on the left
    assert state.zoom > 1.4
    assert right.view.transform().m11() == pytest.approx(left.view.transform().m11())
    x_before = left.view.current_center().x()
    right.view.horizontalScrollBar().setValue(right.view.horizontalScrollBar().value() + 40)  # pan on the right
    qtbot.wait(10)
    assert left.view.current_center().x() > x_before + 5  # the left view followed
    assert left.view.current_center().x() == pytest.approx(right.view.current_center().x(), abs=1.0)
    left.choose_preset("CT bone")
    assert right.state.window == imaging.Window(400, 1800)
    left.view.fit_requested.emit()
    assert state.zoom == 1.0


def test_overlay_follows_the_mask_and_opacity(qtbot, ct_series):
    viewer = SliceViewer()
    qtbot.addWidget(viewer)
    viewer.resize(400, 400)
    viewer.show()
    frames = SeriesFrames(ct_series)
    mask = np.zeros(ct_series.samples[0].shape, bool)
    mask[:, :256] = True
    viewer.mask_provider = lambda f: mask
    viewer.set_frames(frames)
    viewer.choose_preset("CT soft tissue")
    with_mask = viewer.view.image_array()
    viewer.overlay_visible = False
    viewer.render()
    without = viewer.view.image_array()
    h, w, _ = with_mask.shape
    left_half = (slice(h // 3, 2 * h // 3), slice(w // 4, w // 2 - 5))
    right_half = (slice(h // 3, 2 * h // 3), slice(w // 2 + 5, 3 * w // 4))
    red_gain = with_mask[left_half][..., 0].astype(int) - without[left_half][..., 0].astype(int)
    assert red_gain.mean() > 30  # the masked half turned red
    assert np.array_equal(with_mask[right_half], without[right_half])  # the other half did not


def test_monochrome1_is_shown_inverted(qtbot):
    from pathlib import Path

    from salm_desktop.core.model import IntensityMap, Sample, Series, SourceRef, StoredFormat

    ramp = np.tile(np.linspace(0, 1000, 64, dtype=np.float32), (64, 1))
    sample = Sample("a", (64, 64), lambda: ramp, StoredFormat.for_dtype("uint16"), SourceRef(Path("/x/a.dcm")))
    series = Series("m1", "npz", "CR", [sample], IntensityMap(0, 1000), Path("/x"), meta={"photometric": "MONOCHROME1"})
    viewer = SliceViewer()
    qtbot.addWidget(viewer)
    viewer.resize(300, 300)
    viewer.show()
    viewer.set_frames(SeriesFrames(series))
    viewer.choose_preset(imaging.FULL_RANGE)

    def grey(x: int) -> int:
        return viewer.view.base.pixmap().toImage().pixelColor(x, 32).red()

    assert (grey(0), grey(63)) == (255, 0)  # low values are bright, as MONOCHROME1 intends
    series.meta["photometric"] = "MONOCHROME2"
    viewer.render()
    assert (grey(0), grey(63)) == (0, 255)
