"""DICOM through the wizard, errors as dialogs, remembered settings, the batch queue, --selftest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PySide6.QtCore import Qt


@pytest.fixture
def shoulder(dicom_dir, tmp_path) -> Path:
    """A copy of the real Hitachi shoulder MR series (4 slices, 64×64) that tests may write next to."""
    dst = tmp_path / "inputs" / "shoulder"
    shutil.copytree(dicom_dir / "hitachi_shoulder_mr" / "dicom", dst)
    return dst


def _protect(qtbot, window):
    """Step 4 with the tiny test settings (Export needs a protected result)."""
    window.go_to(3)
    with qtbot.waitSignal(window.protect_page.finished, timeout=180_000) as outcome:
        window.protect_page.start()
    assert outcome.args == ["done"], window.errors


def _use_clusters(window):
    page = window.settings_page
    page.label_source.setCurrentIndex(page.label_source.findData("clusters"))


def test_dicom_series_protected_and_exported_as_derived_dicom(qtbot, drive, window, shoulder, tmp_path, dicom_dir):
    w = window
    drive.load(w, [shoulder])
    (series,) = w.ctx.state.series
    assert series.modality == "MR" and len(series.samples) == 4
    # unlabelled DICOM: Automatic already means pseudo-labels, and the Load page says so
    assert "pseudo-labels (2 intensity clusters), because the study has no labels" in w.load_page.labels_label.text()
    loads = []
    w.ctx.loaded.connect(lambda: loads.append(1))
    _use_clusters(w)  # the same labels for this study: nothing to re-read
    assert w.ctx.settings.label_source == "clusters" and w.settings_page.n_clusters.isEnabled()
    assert loads == [] and not w.load_page.running and w.load_page.labels_warning.text() == ""
    assert "(MR" in w.settings_page.budget_native.text()
    w.go_to(2)
    drive.wait_for(lambda: w.preview_page.current_mask() is not None, 60)
    assert w.preview_page.current_mask().shape == (64, 64)
    w.go_to(3)
    with qtbot.waitSignal(w.protect_page.finished, timeout=180_000) as outcome:
        w.protect_page.start()
    assert outcome.args == ["done"], w.errors
    series = w.ctx.state.series[0]
    result = w.ctx.state.protect_result
    w.go_to(4)
    drive.wait_for(lambda: bool(w.review_page.fidelity), 60)
    w.go_to(5)
    out = tmp_path / "shoulder_out"
    w.export_page.destination.setText(str(out))
    with qtbot.waitSignal(w.export_page.finished, timeout=180_000) as outcome:
        w.export_page.start()
    assert outcome.args == ["done"], w.errors
    written = sorted(p for p in out.rglob("*.dcm"))
    assert len(written) == 4
    # de-identified by default: no SourceImageSequence; the release mirrors the input file names
    by_name = {Path(s.source.path).name: (i, s) for i, s in enumerate(series.samples)}
    for path in written:
        ds = pydicom.dcmread(path)
        assert ds.ImageType[0] == "DERIVED" and ds.PatientIdentityRemoved == "YES"
        i, sample = by_name[path.name]
        assert ds.SOPInstanceUID != sample.meta["sop_instance_uid"]
        native = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
        assert np.array_equal(native, result.protected(series.id, i))  # the reviewed pixels were written
    assert (out / "manifest.json").exists() and (out / "report.html").exists()
    for src in (dicom_dir / "hitachi_shoulder_mr" / "dicom").iterdir():  # the inputs were only read
        assert (shoulder / src.name).read_bytes() == src.read_bytes()


def test_errors_are_one_line_dialogs_naming_the_file(qtbot, drive, window, shoulder, tmp_path):
    w = window
    missing = tmp_path / "no_such_folder"
    w.load_page.add_paths([missing])
    assert w.errors[-1] == ("Cannot load", f"{missing}: no such file or folder")

    w.load_page.clear()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "scan.dcm").write_bytes(b"this is not DICOM at all" * 10)
    drive.load(w, [junk])
    title, message = w.errors[-1]
    assert title == "Nothing to protect" and "scan.dcm" in message and "\n" not in message
    assert w.load_page.skipped_table.rowCount() == 1
    assert w.load_page.skipped_table.item(0, 0).text().endswith("scan.dcm")
    assert not w.next_button.isEnabled()  # nothing to go on with

    w.load_page.clear()
    drive.load(w, [shoulder])
    _use_clusters(w)
    drive.wait_for(lambda: not w.load_page.running, 60)
    _protect(qtbot, w)
    w.go_to(5)
    w.export_page.destination.setText(str(shoulder / "inside"))
    with qtbot.waitSignal(w.export_page.finished, timeout=120_000) as outcome:
        w.export_page.start()
    assert outcome.args == ["failed"]
    title, message = w.errors[-1]
    assert title == "Export failed" and "inside the input" in message and "Traceback" not in message
    assert not (shoulder / "inside").exists()


def test_settings_and_last_folders_are_remembered(qtbot, qsettings, shoulder, drive):
    from salm_desktop.gui.main_window import MainWindow

    first = MainWindow(qsettings, show_dialogs=False)
    qtbot.addWidget(first)
    page = first.settings_page
    page.method.setCurrentIndex(page.method.findData("em"))
    page.epsilon.setText("4/255")
    page.epsilon.editingFinished.emit()
    page.seed.setValue(7)
    assert not page.mask_ratio.isEnabled()  # EM perturbs the whole image
    first.load_page.add_paths([shoulder], load=False)
    first.close()

    second = MainWindow(qsettings, show_dialogs=False)
    qtbot.addWidget(second)
    s = second.ctx.settings
    assert (s.method, s.seed) == ("em", 7) and s.epsilon == pytest.approx(4 / 255)
    assert second.settings_page.epsilon.text() == "4/255" and second.settings_page.seed.value() == 7
    assert second.ctx.store.last_folder("input") == str(shoulder)
    assert Path(qsettings.fileName()).read_text().count("method=em") == 1  # stored in the test's own file
    second.close()


def test_bad_epsilon_is_reported_on_the_page(qtbot, window):
    page = window.settings_page
    page.epsilon.setText("banana")
    page.epsilon.editingFinished.emit()
    assert "not a number" in page.error_label.text()
    assert window.ctx.settings.epsilon == pytest.approx(8 / 255)  # the last good value stays


def test_batch_queue_runs_folders_one_after_another(qtbot, window, shoulder, tmp_path):
    w = window
    _use_clusters(w)
    empty = tmp_path / "inputs" / "empty"
    empty.mkdir()
    dialog = w.open_batch()
    dialog.add_folder(shoulder)
    dialog.add_folder(empty)
    dialog.add_folder(shoulder)  # duplicates are ignored
    assert dialog.table.rowCount() == 2
    dialog.out_root.setText(str(tmp_path / "batch_out"))
    with qtbot.waitSignal(dialog.finished_queue, timeout=240_000) as outcome:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert outcome.args == ["done"]
    assert [i.status for i in dialog.queue.items] == ["done", "failed"]
    assert "nothing loadable" in dialog.queue.items[1].message.lower()
    assert (tmp_path / "batch_out" / "shoulder" / "manifest.json").exists()
    assert len(list((tmp_path / "batch_out" / "shoulder").rglob("*.dcm"))) == 4
    assert not (tmp_path / "batch_out" / "empty").exists()
    assert (tmp_path / "batch_out" / "batch-summary.json").exists()
    assert w.errors[-1][0] == "Some folders failed" and "empty" in w.errors[-1][1]
    assert dialog.table.item(0, 1).text() == "done"
    dialog.close()


def test_selftest_exits_zero_in_a_real_x_window(tmp_path):
    """The self-test on Qt's xcb plugin in an X server (Xvfb), as on a desktop: the libraries the
    plugin loads are really there (offscreen needs none of them)."""
    xvfb_run = shutil.which("xvfb-run")
    if xvfb_run is None:
        pytest.skip("xvfb-run is not installed (Debian package xvfb; .ci/run installs it)")
    env = {"QT_QPA_PLATFORM": "xcb", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([xvfb_run, "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-m", "salm_desktop.gui.app",
                          "--selftest"], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "salm-desktop --selftest: OK on xcb" in out.stdout
    assert not (tmp_path / "config").exists() or not any((tmp_path / "config").rglob("*.conf"))


def test_loading_runs_off_the_ui_thread_and_cancels(qtbot, window, dicom_dir, monkeypatch):
    """The real loader on the 150-file fMRI folder, held midway by a listener until the cancel is clicked."""
    import threading

    from PySide6.QtCore import QTimer

    from salm_desktop.gui import services

    real_load = services.load
    held, release = threading.Event(), threading.Event()

    def held_load(paths, settings, progress):
        def hold(event):
            if event.stage == "load" and event.done >= 3 and not held.is_set():
                held.set()
                release.wait(60)  # the worker stops here (after 3 of 150 files) until the test lets it go

        progress.add_listener(hold)
        return real_load(paths, settings, progress)

    monkeypatch.setattr(services, "load", held_load)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    page = window.load_page
    page.add_paths([dicom_dir / "nih_ge_epi_fmri" / "dicom"])
    assert page.running and page.cancel_button.isEnabled()
    qtbot.waitUntil(held.is_set, timeout=30_000)
    qtbot.waitUntil(lambda: page.progress.value() > 0, timeout=30_000)
    assert "Loading…" in page.status.text()
    qtbot.waitUntil(lambda: len(ticks) >= 5, timeout=30_000)  # the event loop runs while the worker is busy
    assert page.running
    with qtbot.waitSignal(page.finished, timeout=30_000) as outcome:
        qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
        release.set()  # the next checkpoint of the worker sees the cancel
    timer.stop()
    assert outcome.args == [False]
    assert page.progress.value() == 0 and "cancelled" in page.status.text()
    assert window.ctx.state.load_result is None
    assert window.errors == []
    # loading again without the brake finishes: 15 positions x 10 time points
    monkeypatch.setattr(services, "load", real_load)
    with qtbot.waitSignal(page.finished, timeout=60_000):
        page.start_load()
    (series,) = window.ctx.state.series
    assert len(series.samples) == 150 and tuple(series.meta["dims"]) == (10, 15)
    assert "64×64  (10 × 15)" in page.series_table.item(0, 5).text()


def test_drag_and_drop_loads_and_recent_inputs_are_offered(qtbot, drive, window, shoulder):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    page = window.load_page
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(shoulder))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(page.finished, timeout=60_000) as outcome:
        page.dropEvent(event)
    assert outcome.args == [True] and event.isAccepted()
    assert page.input_paths() == [shoulder]
    assert [len(s.samples) for s in window.ctx.state.series] == [4]
    window._fill_recent()
    assert [a.text() for a in window.recent_menu.actions()] == [str(shoulder)]


def test_selftest_reports_a_failure_with_one_line(qapp, monkeypatch, capsys, tmp_path):
    from salm_desktop.gui import app as app_module

    monkeypatch.setattr(app_module, "SAMPLE_NPZ", tmp_path / "missing.npz")
    assert app_module.selftest(qapp) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"salm-desktop --selftest: FAILED: {tmp_path / 'missing.npz'}: bundled sample data is missing"


def test_cancelled_export_leaves_nothing_behind(qtbot, drive, window, shoulder, tmp_path, monkeypatch):
    import threading

    from salm_desktop.gui import services

    real_export = services.export
    held, release = threading.Event(), threading.Event()

    def held_export(*args, **kwargs):
        progress = args[5] if len(args) > 5 else kwargs["progress"]

        def hold(event):
            if event.stage != "log" and event.done > 0 and not held.is_set():
                held.set()
                release.wait(60)  # the export stops at its first step until the cancel is clicked

        progress.add_listener(hold)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(services, "export", held_export)
    w = window
    drive.load(w, [shoulder])
    _use_clusters(w)
    drive.wait_for(lambda: not w.load_page.running, 60)
    w.go_to(5)
    assert w.stack.currentIndex() == 0  # Export needs a protected result first
    _protect(qtbot, w)
    w.go_to(5)
    assert w.stack.currentIndex() == 5
    out_parent = tmp_path / "exports"
    out_parent.mkdir()
    w.export_page.destination.setText(str(out_parent / "shoulder_protected"))
    with qtbot.waitSignal(w.export_page.finished, timeout=120_000) as outcome:
        w.export_page.start()
        qtbot.waitUntil(held.is_set, timeout=60_000)
        qtbot.mouseClick(w.export_page.cancel_button, Qt.MouseButton.LeftButton)
        release.set()
    assert outcome.args == ["cancelled"]
    assert "nothing was written" in w.export_page.status.text()
    assert list(out_parent.iterdir()) == []  # no output, no partial folder
    assert not w.export_page.open_folder.isEnabled()


def test_csv_labels_reload_the_study_and_bad_csv_is_a_dialog(qtbot, drive, window, shoulder, tmp_path):
    w = window
    drive.load(w, [shoulder])
    good = tmp_path / "labels.csv"
    good.write_text("path,label\n" + "".join(f"inputs/shoulder/{p.name},{i % 2}\n"
                                             for i, p in enumerate(sorted(shoulder.glob("*.dcm")))))
    page = w.settings_page
    with qtbot.waitSignal(w.load_page.finished, timeout=60_000):
        page.csv_path.setText(str(good))
        page.label_source.setCurrentIndex(page.label_source.findData("csv"))
    assert w.ctx.settings.loader_labels() == f"csv:{good}"
    (series,) = w.ctx.state.series
    assert sorted(series.labels) == [0, 0, 1, 1]
    assert w.load_page.series_table.item(0, 6).text() == "0: 2, 1: 2"

    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\ninputs/shoulder/001.dcm\n")
    with qtbot.waitSignal(w.load_page.finished, timeout=60_000) as outcome:
        page.csv_path.setText(str(bad))
        page.csv_path.editingFinished.emit()
    assert outcome.args == [False]
    title, message = w.errors[-1]
    assert title == "Loading failed" and "bad.csv" in message and "\n" not in message


def test_default_settings_location_is_redirected_in_tests(_no_real_user_settings):
    from salm_desktop.gui.store import SettingsStore

    store = SettingsStore()  # what the real application uses
    store.set_last_folder("input", _no_real_user_settings)
    assert Path(store.qs.fileName()).is_relative_to(_no_real_user_settings)
