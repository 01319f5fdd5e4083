"""The wizard with a real Orthanc on loopback: Open from PACS on the load page, protect, export, Send to
PACS on the export step with each instance's outcome shown; the private folder goes with the study."""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "pacs"))
from orthanc_server import PASSWORD, USER, start_orthanc  # noqa: E402

pytest.importorskip("dicomweb_client")
pytest.importorskip("pynetdicom")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, dicom_dir):  # noqa: ANN001
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"), sorted((dicom_dir / "ct_3slice_dcmqi" / "dicom").glob("*.dcm")))
    yield server
    server.stop()


def _held(server) -> set[str]:  # noqa: ANN001
    rows = server.session().get(f"{server.rest}/instances?expand", timeout=30).json()
    return {r["MainDicomTags"]["SOPInstanceUID"] for r in rows}


def test_open_from_pacs_protect_export_and_send_to_pacs(qtbot, drive, window, orthanc, tmp_path, monkeypatch):
    from salm_desktop.gui.pacs_dialog import COLUMNS, SEND_COLUMNS, PacsSession

    monkeypatch.setenv("SALM_PACS_USER", USER)
    monkeypatch.setenv("SALM_PACS_PASSWORD", PASSWORD)
    w = window
    originals = _held(orthanc)
    # -- load: Open from PACS…, search by modality, retrieve the study; it is loaded like a folder
    w.load_page.pacs_button.click()
    dialog = w.load_page.pacs_dialog
    dialog.server.setEditText(f"dicomweb:{orthanc.dicomweb}")
    dialog.modality.setText("CT")
    dialog.search_button.click()
    drive.wait_for(lambda: not dialog.running and dialog.table.rowCount() == 1, 30)
    assert dialog.table.item(0, COLUMNS.index("Accession")).text() == "03086212"
    dialog.table.selectRow(0)
    w.ctx.state.load_result = None
    dialog.retrieve_button.click()
    drive.wait_for(lambda: w.ctx.state.load_result is not None and not w.load_page.running, 60)
    assert w.errors == [] and not dialog.isVisible()
    (private,) = PacsSession.of(w.ctx).folders
    assert (private.stat().st_mode & 0o077) == 0 and sum(len(s.samples) for s in w.ctx.state.series) == 3

    # -- protect (a quick method) and export
    w.ctx.settings.method = "random"
    w.go_to(3)
    with qtbot.waitSignal(w.protect_page.finished, timeout=120_000) as outcome:
        w.protect_page.start()
    assert outcome.args == ["done"], w.errors
    w.go_to(5)
    export = w.export_page
    assert not export.send_button.isEnabled()  # nothing to send before the release is complete
    out = tmp_path / "release"
    export.destination.setText(str(out))
    with qtbot.waitSignal(export.finished, timeout=120_000) as outcome:
        export.start()
    assert outcome.args == ["done"], w.errors
    drive.wait_for(lambda: export.send_button.isEnabled(), 30)  # once the export's thread has ended

    # -- Send to PACS…: over DIMSE; each instance's outcome is listed; a second send sends nothing again
    export.send_button.click()
    send = export.send_dialog
    send.server.setEditText(orthanc.dimse)
    with qtbot.waitSignal(send.sent, timeout=60_000):
        send.send_button.click()
    rows = [[send.table.item(r, c).text() for c in range(len(SEND_COLUMNS))] for r in range(send.table.rowCount())]
    assert len(rows) == 3 and all(r[1] == "sent" and r[2] == "1" for r in rows), rows
    assert "3 sent" in send.status.text()
    protected = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in out.rglob("*.dcm")}
    assert _held(orthanc) == originals | protected and len(protected) == 3 and not protected & originals
    drive.wait_for(lambda: send.send_button.isEnabled(), 30)  # re-enabled when the worker's thread has ended
    with qtbot.waitSignal(send.sent, timeout=60_000):
        send.send_button.click()
    assert [send.table.item(r, 1).text() for r in range(3)] == ["already sent"] * 3
    send.accept()

    # -- the private folder goes when the study does
    w.load_page.clear()
    assert not private.exists() and PacsSession.of(w.ctx).folders == {}


def test_send_failures_and_refusals_are_listed_per_instance(qtbot, qsettings, dicom_dir, tmp_path):
    from orthanc_server import free_port

    from salm_desktop.gui.pacs_dialog import SendDialog

    release = tmp_path / "release"
    release.mkdir()
    for f in sorted((dicom_dir / "ct_3slice_dcmqi" / "dicom").glob("*.dcm")):
        (release / f.name).write_bytes(f.read_bytes())
    originals = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in release.glob("*.dcm")}
    down = f"dimse:ORTHANC@127.0.0.1:{free_port()}"
    for known_originals, status, message in [(set(), "failed", "cannot reach the server"),
                                             (originals, "refused", "would replace the original")]:
        dialog = SendDialog(release, known_originals, qsettings)
        qtbot.addWidget(dialog)
        dialog.server.setEditText(down)
        with qtbot.waitSignal(dialog.sent, timeout=60_000):
            dialog.send()
        rows = [[dialog.table.item(r, c).text() for c in range(4)] for r in range(dialog.table.rowCount())]
        assert len(rows) == 3 and all(r[1] == status and message in r[3] for r in rows), rows
        assert f"3 {status}" in dialog.status.text() and "Send again" in dialog.status.text()
    assert not (tmp_path / ".release.salm-send.jsonl").exists()  # nothing counted as sent
