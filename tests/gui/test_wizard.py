"""Drive the whole wizard off-screen on real studies: load, preview, protect, cancel, review, export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt



def _mask_on_screen(page):
    return page.current_mask() is not None


@pytest.fixture
def breast_subset(medmnist_dir, tmp_path) -> Path:
    """The first 48/16/16 images of the real BreastMNIST splits, as the same kind of npz file."""
    source = np.load(medmnist_dir / "breastmnist.npz")
    folder = tmp_path / "breast"
    folder.mkdir()
    n = {"train": 48, "val": 16, "test": 16}
    np.savez(folder / "breastmnist.npz", **{f"{split}_{kind}": source[f"{split}_{kind}"][:k]
                                            for split, k in n.items() for kind in ("images", "labels")})
    return folder / "breastmnist.npz"


def test_whole_wizard_on_breastmnist(qtbot, drive, window, breast_subset, tmp_path, monkeypatch):
    w = window
    # -- 1. load ---------------------------------------------------------------------------------
    drive.load(w, [breast_subset])
    assert w.errors == []
    state = w.ctx.state
    assert sorted((s.meta["split"], len(s.samples)) for s in state.series) == [("test", 16), ("train", 48), ("val", 16)]
    assert w.load_page.series_table.rowCount() == 3
    checked = {w.load_page.series_table.item(r, 0).text(): w.load_page.series_table.item(r, 0).checkState()
               for r in range(3)}
    train = next(s for s in state.series if s.meta["split"] == "train")
    assert checked[train.id] == Qt.CheckState.Checked
    assert sum(v == Qt.CheckState.Checked for v in checked.values()) == 1  # val/test are left out by default
    assert w.load_page.status.text() == "3 series, 80 images"
    assert w.load_page.labels_label.text().startswith("Labels: the study's own (2 classes: 0, 1")
    assert w.load_page.labels_warning.text() == ""
    # nothing was protected yet: Review and Export are greyed out, and Export refuses to start
    assert [w.can_enter(i) for i in range(6)] == [True, True, True, True, False, False]
    assert not (w.steps.item(5).flags() & Qt.ItemFlag.ItemIsEnabled)
    w.go_to(5)
    assert w.stack.currentIndex() == 0
    w.export_page.start()
    assert w.errors.pop() == ("Nothing to export", "Protect the study (step 4) first.")

    # -- 2. settings -----------------------------------------------------------------------------
    w.go_to(1)
    assert w.stack.currentIndex() == 1
    assert "8/255" in w.settings_page.budget_normalized.text()
    assert "±8 (OT" in w.settings_page.budget_native.text()  # 8/255 of 0..255

    # -- 3. preview: the overlay follows the mask ratio ------------------------------------------
    w.go_to(2)
    page = w.preview_page
    page.mask_ratio.setValue(0.1)
    drive.wait_for(lambda: _mask_on_screen(page), 60)
    qtbot.wait(50)
    small_mask = page.current_mask().copy()
    small_view = page.viewer.view.image_array()
    assert small_mask.shape == (28, 28) and small_mask.mean() == pytest.approx(0.1, abs=0.02)
    page.mask_ratio.setValue(0.5)
    assert w.settings_page.mask_ratio.value() == 0.5 and w.ctx.settings.mask_ratio == 0.5
    drive.wait_for(lambda: _mask_on_screen(page), 60)
    qtbot.wait(50)
    big_mask = page.current_mask()
    big_view = page.viewer.view.image_array()
    assert big_mask.mean() == pytest.approx(0.5, abs=0.02)
    assert big_mask[small_mask].mean() > 0.9  # the top 10 % stay in the top 50 %
    red = lambda img: ((img[..., 0].astype(int) - img[..., 1].astype(int)) > 60).mean()  # noqa: E731
    assert red(big_view) > red(small_view) * 2  # many more red pixels on screen
    assert "50.0 %" in page.mask_status.text()
    page.mask_ratio.setValue(0.2)

    # -- 4. protect, then cancel a second run midway ---------------------------------------------
    # min-min (rounds, a stop accuracy, a curve): on these 8-bit images the default runs the class
    # texture, which has no rounds; it runs at the end of this step
    w.ctx.settings.method = "salm-v1"
    w.go_to(3)
    assert w.stack.currentIndex() == 3
    protect = w.protect_page
    assert protect.plan_label.text().startswith("Will run on: CPU")  # the device that runs, before the click
    seen = []  # (rounds measured, time left) after every progress event of the run
    with qtbot.waitSignal(protect.finished, timeout=180_000) as outcome:
        qtbot.mouseClick(protect.start_button, Qt.MouseButton.LeftButton)
        assert protect.running and not protect.start_button.isEnabled()
        assert not w.load_page.clear_button.isEnabled()  # the study cannot be cleared under a running step
        protect.worker.progressed.connect(lambda _e: seen.append((len(protect.status.history), protect.status.eta_s)))
    assert outcome.args == ["done"], w.errors
    assert seen and all(eta is None for measured, eta in seen if measured == 0)  # no guess before a round ran
    assert any(eta is not None for measured, eta in seen if measured >= 1) or protect.status.eta_s == 0
    assert protect.plot.rounds == [1, 2] and len(protect.plot.accuracy) == 2 and len(protect.plot.loss) == 2
    assert protect.eta_label.text() == "0 s"
    done_line = protect.log.toPlainText().split("Done. ")[1]
    assert "Largest change of a pixel:" in done_line and "Device: CPU" in done_line and "_" not in done_line
    first = state.protect_result
    assert first is not None and state.protected_ids == [train.id]
    assert protect.overall.value() == 1000 and protect.bars[train.id].value() == 1000
    assert protect.accuracy_label.text().endswith("%")
    assert "round 1" in protect.log.toPlainText()

    # a long second run: a stop accuracy above 1 can never be reached (1.0 can, on 48 images, which
    # once ended the run before the cancel click)
    w.ctx.settings.max_rounds, w.ctx.settings.stop_accuracy = 50, 1.01
    with qtbot.waitSignal(protect.finished, timeout=120_000) as outcome:
        protect.start()
        # midway: once the engine is perturbing (round 1), not while it is still reading samples
        drive.wait_for(lambda: protect.status.round is not None and protect.status.round >= 1, 90)
        events_at_cancel = protect.events_seen
        assert protect.running, (w.errors, protect.log.toPlainText())  # still running when we cancel
        qtbot.mouseClick(protect.cancel_button, Qt.MouseButton.LeftButton)
        assert not protect.cancel_button.isEnabled() and "Cancelling" in protect.log.toPlainText(), (
            w.errors, protect.running, protect.status.message, protect.status.round)
    assert outcome.args == ["cancelled"]
    assert 0.0 < protect.stopped_at_fraction < 0.1  # it really stopped early in a 50-round run
    # what the stopped run showed is gone: no stale progress, time left or curve
    assert protect.overall.value() == 0 and protect.eta_label.text() == "–" and protect.plot.rounds == []
    assert all(bar.value() == 0 for bar in protect.bars.values())
    # the engine checks at every batch: at most the batch that was running reports after the cancel
    assert protect.events_seen - events_at_cancel <= 3
    assert state.protect_result is first  # the cancelled run replaced nothing
    assert "Cancelled" in protect.log.toPlainText()
    # the settings stay those of the cancelled run: the export must still write the reviewed pixels

    # -- 5. review -------------------------------------------------------------------------------
    w.go_to(4)
    review = w.review_page
    drive.wait_for(lambda: bool(review.fidelity), 60)
    numbers = review.fidelity[train.id]
    assert 0 < numbers["fraction_changed"] <= 0.3
    assert numbers["max_abs_change_native"] <= 8.5  # 8/255 of 0..255, rounded to uint8
    assert numbers["psnr_db"] > 30 and 0.9 < numbers["ssim"] <= 1.0
    assert review.table.rowCount() == 1 and review.table.item(0, 0).text() == train.id
    # computed here, independently of the core's fidelity module
    diff = (np.stack([first.protected(train.id, i) for i in range(len(train.samples))]).astype(np.float64)
            - np.stack([s.read() for s in train.samples]))
    independent = {"psnr_db": 10 * np.log10(1 / np.mean((diff / train.intensity.width) ** 2)),
                   "max_abs_change_native": np.abs(diff).max(), "mean_abs_change_native": np.abs(diff).mean(),
                   "fraction_changed": np.mean(diff != 0)}
    for key in ("psnr_db", "max_abs_change_native", "mean_abs_change_native", "fraction_changed"):
        assert numbers[key] == pytest.approx(independent[key], rel=1e-6), key
    original = train.samples[3].read()
    protected = first.protected(train.id, 3)
    review.state.set_frame(3)
    assert np.array_equal(review.left.frames.frame(3), original)
    assert np.array_equal(review.right.frames.frame(3), protected)
    assert review.right.slider.value() == 3
    review.right_mode.setCurrentIndex(1)  # difference map
    assert review.right.mode == "difference"
    assert review.right.last_difference_scale == pytest.approx(np.abs(protected - original).max())
    assert "full colour" in review.diff_label.text()
    review._flicker_tick()
    assert review.left.frames is review.protected and "flicker" in review.left.title.text()
    review._show_left(original=True)
    review.flicker.setChecked(True)  # the timer alternates the left view on its own
    qtbot.waitUntil(lambda: review.left.frames is review.protected, timeout=3000)
    qtbot.waitUntil(lambda: review.left.frames is review.original, timeout=3000)
    review.flicker.setChecked(False)
    assert review.left.frames is review.original

    # -- 6. export -------------------------------------------------------------------------------
    w.go_to(5)
    export = w.export_page
    assert export.destination.text().endswith("breastmnist_protected")
    assert not Path(export.destination.text()).resolve().is_relative_to(breast_subset.parent.resolve()) or \
        breast_subset.is_file()  # never inside an input folder
    out = tmp_path / "export"
    export.destination.setText(str(out))
    opened = []
    monkeypatch.setattr("salm_desktop.gui.pages.export.QDesktopServices.openUrl",
                        lambda url: opened.append(url.toLocalFile()) or True)
    with qtbot.waitSignal(export.finished, timeout=240_000) as outcome:
        qtbot.mouseClick(export.export_button, Qt.MouseButton.LeftButton)
    assert outcome.args == ["done"], w.errors
    files = {p.name for p in out.rglob("*") if p.is_file()}
    assert {"breastmnist.npz", "manifest.json", "report.html", "report.pdf"} <= files
    written = np.load(out / "breastmnist.npz")
    source = np.load(breast_subset)
    assert np.array_equal(written["val_images"], source["val_images"])  # unprotected splits copied unchanged
    assert np.array_equal(written["test_images"], source["test_images"])
    assert np.array_equal(written["train_labels"], source["train_labels"])
    for i in (0, 3, 47):  # exactly the pixels that were reviewed
        assert np.array_equal(written["train_images"][i], first.protected(train.id, i).astype(np.uint8))
    assert not np.array_equal(written["train_images"], source["train_images"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest  # parses
    assert (out / "report.html").read_text(encoding="utf-8").lower().count("<html") == 1
    assert (out / "report.pdf").read_bytes()[:4] == b"%PDF"
    assert "report.html" in export.summary.toPlainText()
    qtbot.mouseClick(export.open_report, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(export.open_folder, Qt.MouseButton.LeftButton)
    assert opened == [str(out / "report.html"), str(out)]
    assert w.errors == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not mkdtemp's 0700
    summary = export.summary.toPlainText()
    assert "Largest change of a pixel:" in summary and "epsilon:" not in summary and "Budget: ±8/255" in summary

    # no program to open the report with: the path is shown and can be copied
    monkeypatch.setattr("salm_desktop.gui.pages.export.QDesktopServices.openUrl", lambda url: False)
    qtbot.mouseClick(export.open_report, Qt.MouseButton.LeftButton)
    assert export.report_path.text() == str(out / "report.html") and "No program" in export.open_note.text()
    qtbot.mouseClick(export.copy_path, Qt.MouseButton.LeftButton)
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == str(out / "report.html")

    # the same folder again: refused without the overwrite option, replaced with it
    with qtbot.waitSignal(export.finished, timeout=240_000) as outcome:
        export.start()
    assert outcome.args == ["failed"] and "already exists" in w.errors.pop()[1]
    (out / "marker.txt").write_text("old export")
    export.overwrite.setChecked(True)
    with qtbot.waitSignal(export.finished, timeout=240_000) as outcome:
        export.start()
    assert outcome.args == ["done"], w.errors
    assert not (out / "marker.txt").exists() and (out / "breastmnist.npz").exists()

    # -- Clear: everything made from the study goes with it --------------------------------------
    w.go_to(4)
    drive.wait_for(lambda: not w.ctx.busy, 30)  # the export worker's thread has ended
    assert w.load_page.clear_button.isEnabled()
    qtbot.mouseClick(w.load_page.clear_button, Qt.MouseButton.LeftButton)
    assert state.protect_result is None and state.protected_ids == []
    assert w.stack.currentIndex() == 0  # the Review step lost its input: the window left it
    assert [w.can_enter(i) for i in range(6)] == [True, False, False, False, False, False]
    assert protect.overall.value() == 0 and protect.plot.rounds == [] and protect.log.toPlainText() == ""
    assert review.series.count() == 0 and review.fidelity == {} and review.table.rowCount() == 0
    assert export.summary.toPlainText() == "" and not export.open_report.isEnabled()
    assert w.load_page.progress.value() == 0 and w.load_page.labels_label.text() == ""


def test_preview_of_3d_volumes(qtbot, drive, window, medmnist_dir, tmp_path):
    """AdrenalMNIST3D: each 28³ volume scrolls as 28 slices; the mask is a volume, shown slice by slice."""
    source = np.load(medmnist_dir / "adrenalmnist3d.npz")
    path = tmp_path / "adrenal.npz"
    np.savez(path, train_images=source["train_images"][:6], train_labels=source["train_labels"][:6])
    w = window
    drive.load(w, [path])
    (series,) = w.ctx.state.selected_series
    assert series.sample_shape == (28, 28, 28)
    w.go_to(2)
    page = w.preview_page
    assert len(page.frames) == 6 * 28 and page.viewer.slider.maximum() == 6 * 28 - 1
    page.viewer.state.set_frame(28 + 14)  # volume 2, middle slice
    drive.wait_for(lambda: page.current_mask() is not None, 60)
    mask = page.current_mask()
    assert w.ctx.settings.mask_ratio == 0  # auto: a 3D volume is protected with min-min, 20 % of its voxels
    assert mask.shape == (28, 28, 28) and mask.mean() == pytest.approx(0.2, abs=0.02)
    assert "mask ratio auto" in page.mask_status.text()
    assert np.array_equal(page.frames.frame_mask(28 + 14, mask), mask[14])
    assert "image 2/6, slice 15" in page.viewer.info.text()


def test_labels_follow_each_study_and_a_setting_that_no_longer_fits_is_flagged(qtbot, drive, window, breast_subset,
                                                                              dicom_dir):
    """Pseudo-labels chosen for a DICOM study, then a labelled npz loaded: the Load page shows the npz's
    own labels and warns that they are not used, until the user switches back."""
    w = window
    drive.load(w, [dicom_dir / "hitachi_shoulder_mr" / "dicom"])
    page = w.settings_page
    page.label_source.setCurrentIndex(page.label_source.findData("clusters"))
    assert "pseudo-labels" in w.load_page.labels_label.text() and w.load_page.labels_warning.text() == ""
    w.load_page.clear()
    drive.load(w, [breast_subset])
    train = next(s for s in w.ctx.state.series if s.meta["split"] == "train")
    row = next(r for r in range(w.load_page.series_table.rowCount()) if w.load_page.series_table.item(r, 0).text() == train.id)
    assert w.load_page.series_table.item(row, 6).text().startswith("0: ")  # the npz labels are read and shown
    assert "has its own labels (2 classes)" in w.load_page.labels_warning.text()
    assert "has its own labels" in page.labels_note.text() and "pseudo-labels" in w.protect_page.plan_label.text()
    assert w.load_page.use_study_labels.isVisibleTo(w.load_page)
    qtbot.mouseClick(w.load_page.use_study_labels, Qt.MouseButton.LeftButton)
    assert w.ctx.settings.label_source == "auto" and page.label_source.currentData() == "auto"
    assert w.load_page.labels_warning.text() == "" and not w.load_page.use_study_labels.isVisibleTo(w.load_page)
    assert "the study's own" in w.protect_page.plan_label.text()
    assert page.device_note.text() == f"Will run on: {__import__('salm_desktop.gui.model', fromlist=['x']).device_text('auto')}"


def test_label_maps_beside_a_study_are_not_series_to_protect(drive, window, dicom_dir):
    w = window
    drive.load(w, [dicom_dir / "ct_3slice_dcmqi"])
    assert [s.kind for s in w.ctx.state.series] == ["dicom"]
    assert w.load_page.series_table.rowCount() == 1
    text = w.load_page.label_maps_label.text()
    assert all(name in text for name in ("heart_seg.nrrd", "liver_seg.nrrd", "spine_seg.nrrd"))
    preview = w.preview_page
    preview.show_mask.setChecked(False)
    assert preview.viewer.title.text() == "Original (mask hidden)"
    preview.show_mask.setChecked(True)
    assert preview.viewer.title.text() == "Original with SALM mask"


def test_help_opens_the_bundled_pages(window):
    help_window = window.open_help("user guide")
    assert "SALM Desktop user guide" in help_window.browser.toPlainText()
    window.open_help("troubleshooting")
    assert "Troubleshooting" in help_window.browser.toPlainText() and "libxcb-cursor0" in help_window.browser.toPlainText()
    import salm_desktop
    from salm_desktop.gui.help import HELP_PAGES

    repo = Path(salm_desktop.__file__).resolve().parents[1]
    for filename in HELP_PAGES.values():  # in resources/, so pip installs and the bundle carry them
        bundled = repo / "resources" / filename
        assert bundled.read_text(encoding="utf-8") == (repo / "docs" / filename).read_text(encoding="utf-8")
