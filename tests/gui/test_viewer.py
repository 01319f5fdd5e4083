"""Slice viewers on a real CT series: scroll, zoom, pan, window/level, overlay, synchronization."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent

from salm_desktop.core.studies import load_paths
from salm_desktop.gui import imaging
from salm_desktop.gui.frames import SeriesFrames
from salm_desktop.gui.slice_viewer import SliceViewer
from salm_desktop.gui.viewer import ViewState


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


def _key(view, key) -> None:
    from PySide6.QtGui import QKeyEvent
    from PySide6.QtCore import QEvent

    view.keyPressEvent(QKeyEvent(QEvent.Type.KeyPress, key, Qt.KeyboardModifier.NoModifier))


def test_viewer_shows_hu_under_the_cursor_orientation_scale_and_position(qtbot, ct_series):
    viewer = SliceViewer(title="t")
    qtbot.addWidget(viewer)
    viewer.resize(600, 600)
    viewer.show()
    frames = SeriesFrames(ct_series)
    viewer.set_frames(frames)
    # the value under the mouse, in HU, read from the pixel the cursor is on
    view = viewer.view
    target = view.mapFromScene(QPointF(300.5, 200.5))
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtCore import QEvent

    move = QMouseEvent(QEvent.Type.MouseMove, QPointF(target), QPointF(view.viewport().mapToGlobal(target)),
                       Qt.MouseButton.NoButton, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    view.mouseMoveEvent(move)
    hu = frames.frame(0)[200, 300]
    assert viewer.cursor_label.text() == f"x 300, y 200: {hu:.0f} HU"
    # axial CT (ImageOrientationPatient 1,0,0,0,1,0): patient left on the right of the screen, anterior on top
    assert view.letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    length_mm, length_px = view.scale_bar()
    assert length_mm in (10, 20, 50, 100)
    # the bar is as long on screen as that many mm of 0.81 mm pixels at the current zoom
    assert length_px == pytest.approx(length_mm / 0.810547 * view.transform().m11(), rel=1e-6)
    positions = []
    for _ in range(3):
        positions.append(float(viewer.info.text().split(" at ")[1].split(" mm")[0]))
        _key(view, Qt.Key.Key_PageDown)
    assert viewer.state.frame == 2  # Page Down: next slice, clamped at the last
    assert np.allclose(np.diff(positions), positions[1] - positions[0]) and abs(positions[1] - positions[0]) == pytest.approx(1.0, abs=0.05)
    assert viewer.info.text().startswith("image 3/3, at ") and "(3/3)" not in viewer.info.text()
    _key(view, Qt.Key.Key_PageUp)
    assert viewer.state.frame == 1
    _key(view, Qt.Key.Key_Home)
    assert viewer.state.frame == 0
    _key(view, Qt.Key.Key_End)
    assert viewer.state.frame == 2
    # the documented presets, high contrast included, for CT too
    names = [viewer.preset.itemText(i) for i in range(viewer.preset.count())]
    assert imaging.HIGH_CONTRAST in names and imaging.AUTO_WINDOW in names and "CT lung" in names
    viewer.choose_preset(imaging.HIGH_CONTRAST)
    p5, p95 = np.percentile(frames.frame(2), [5, 95])
    assert (viewer.state.window.low, viewer.state.window.high) == pytest.approx((p5, p95))


def test_geometry_helpers_on_oblique_and_missing_geometry():
    assert imaging.orientation_letters(None) is None
    sagittal = imaging.orientation_letters((0, 1, 0, 0, 0, -1))  # rows along +y (P), columns along -z (I)
    assert sagittal == {"right": "P", "left": "A", "bottom": "I", "top": "S"}
    assert imaging.slice_position_mm((10.0, 20.0, -30.0), (1, 0, 0, 0, 1, 0)) == -30.0
    assert imaging.scale_bar_mm(0.5, 100) == 50 and imaging.scale_bar_mm(0.33, 100) == 20
    assert imaging.value_text(-45.0, "HU") == "-45 HU" and imaging.value_text(0.5321) == "0.5321"


def test_the_pixel_under_the_mouse_is_read_out_in_both_synchronized_viewers(qtbot, ct_series):
    state = ViewState()
    left, right = SliceViewer(state), SliceViewer(state)
    for v in (left, right):
        qtbot.addWidget(v)
        v.resize(400, 400)
        v.show()
    left.set_frames(SeriesFrames(ct_series))
    shifted = SeriesFrames(ct_series, reader=lambda i: ct_series.samples[i].read() + 12.0)  # a "protected" copy
    right.reference = left.frames
    right.set_frames(shifted, keep_window=True)
    left.view.hovered.emit(100, 120)
    hu = left.frames.frame(0)[100, 120]
    assert left.cursor_label.text() == f"x 120, y 100: {hu:.0f} HU"
    assert right.cursor_label.text() == f"x 120, y 100: {hu + 12:.0f} HU"
    right.mode = "difference"
    right.render()
    assert right.cursor_label.text() == "x 120, y 100: change +12 HU"
    left.view.hovered.emit(-1, -1)  # the mouse left the image
    assert left.cursor_label.text() == "" and right.cursor_label.text() == ""
