"""The export step's de-identification panel (issue 15 item 5), off-screen on the real CT study."""

from __future__ import annotations

import pydicom
import pytest

from salm_desktop.core.export.deid import DeidOptions


@pytest.fixture
def ct_study(dicom_dir):
    return dicom_dir / "ct_3slice_dcmqi"


def _rows(table):
    return {table.item(r, 0).text(): [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())}


def test_export_page_previews_the_changes_of_the_loaded_study(qtbot, drive, window, ct_study, tmp_path):
    drive.load(window, [ct_study])
    window.go_to(5)
    panel = window.export_page.deid
    source = pydicom.dcmread(panel.preview_source, stop_before_pixels=True)
    assert panel.preview_source.suffix == ".dcm" and panel.preview_source.name in panel.preview_label.text()
    rows = _rows(panel.preview)
    # before -> after from the file itself: the name and ID become one keyed pseudonym, the UIDs new ones
    assert rows["PatientName"][2] == str(source.PatientName) and rows["PatientName"][3].startswith("SALM")
    assert rows["PatientID"][2] == source.PatientID and rows["PatientID"][3] == rows["PatientName"][3]
    assert rows["StudyInstanceUID"][2] == source.StudyInstanceUID and rows["StudyInstanceUID"][3].startswith("2.25.")
    assert rows["StudyDate"][1] == "emptied" and rows["PatientIdentityRemoved"][3] == "YES"
    assert panel.preview.item(0, 0).text() == "PatientName"  # what identifies the patient comes first
    assert "113100" in panel.profile.text() and "113107" not in panel.profile.text()

    # an option changes the profile, the codes and the preview: dates are shifted, not emptied
    panel.boxes["retain_dates"].setChecked(True)
    rows = _rows(panel.preview)
    assert "113107" in panel.profile.text()
    assert rows["StudyDate"][1] == "replaced" and rows["StudyDate"][3] < rows["StudyDate"][2]
    assert rows["LongitudinalTemporalInformationModified"][3] == "MODIFIED"

    # where the private record goes follows the destination, outside it
    out = tmp_path / "release"
    window.export_page.destination.setText(str(out))
    assert str(out.with_name("release.steward") / "steward-record.json") in panel.steward_note.text()

    # keeping identity: a plain warning, no preview rows, no record
    panel.keep_identity.setChecked(True)
    assert panel.warning.text().startswith("IDENTITY KEPT: not for release outside the hospital")
    assert panel.preview.rowCount() == 0 and not panel.boxes["retain_dates"].isEnabled()
    assert panel.job_kwargs()["deid"] == DeidOptions(keep_identity=True, retain_dates=True)
    panel.keep_identity.setChecked(False)

    panel.operator.setText("  Dr. A.   Steward ")
    panel.purpose.setText("Lesion study with University X")
    steward = tmp_path / "records" / "ct"
    panel.steward.setText(str(steward))
    kwargs = panel.job_kwargs()
    assert kwargs["deid"] == DeidOptions(retain_dates=True)
    assert kwargs["release_info"].cleaned().operator == "Dr. A. Steward"
    assert kwargs["steward_record"] == steward


def test_panel_says_when_the_study_has_no_dicom_file(qtbot, drive, window, medmnist_dir, tmp_path):
    import numpy as np

    source = np.load(medmnist_dir / "breastmnist.npz")
    small = tmp_path / "breast.npz"
    np.savez(small, train_images=source["train_images"][:8], train_labels=source["train_labels"][:8])
    drive.load(window, [small])
    panel = window.export_page.deid
    assert panel.preview_source is None and panel.preview.rowCount() == 0
    assert "no DICOM file" in panel.preview_label.text()


def test_unreadable_secret_is_a_message_in_the_panel(qtbot, window, ct_study, tmp_path):
    from salm_desktop.gui.deid_panel import DeidPanel

    panel = DeidPanel()
    qtbot.addWidget(panel)
    short = tmp_path / "short-secret"
    short.write_text("abc")
    panel.options = lambda: DeidOptions(secret=short)  # as if the wizard were given this secret
    panel.set_study(sorted((ct_study / "dicom").glob("*.dcm")))
    assert panel.preview.rowCount() == 0
    assert panel.preview_label.text().startswith("No preview: de-identification secret") and "too short" in panel.preview_label.text()


def test_the_export_carries_the_choices_into_the_release(qtbot, drive, window, ct_study, tmp_path):
    import json
    import subprocess

    from PySide6.QtCore import Qt

    window.ctx.settings.method = "random"  # the export is what is tested here, not the engine
    window.settings_page.show_settings(window.ctx.settings)
    drive.load(window, [ct_study])
    window.go_to(3)
    window.protect_page.start()
    drive.wait_for(lambda: not window.protect_page.running and window.ctx.state.protect_result is not None, 120)
    window.go_to(5)
    export = window.export_page
    out = tmp_path / "release"
    export.destination.setText(str(out))
    export.deid.boxes["retain_device_identity"].setChecked(True)
    export.deid.operator.setText("A. Steward")
    export.deid.purpose.setText("Liver study")
    steward = tmp_path / "private" / "ct"
    export.deid.steward.setText(str(steward))
    with qtbot.waitSignal(export.finished, timeout=240_000) as outcome:
        qtbot.mouseClick(export.export_button, Qt.MouseButton.LeftButton)
    assert outcome.args == ["done"], window.errors
    codes = [c["code"] for c in json.loads((out / "manifest.json").read_text())["deidentification"]["options"]]
    assert codes == ["113100", "113109"]
    assert (steward / "steward-record.json").is_file() and not out.with_name("release.steward").exists()
    first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(out / "officer-report.pdf"), "-"],
                           capture_output=True, text=True, check=True).stdout
    assert "A. Steward" in first and "Liver study" in first and "113109" in first
    assert f"Officer report (page 1 to sign): {out / 'officer-report.pdf'}" in export.summary.toPlainText()
