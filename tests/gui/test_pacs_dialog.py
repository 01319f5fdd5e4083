"""Load from PACS dialog against a real Orthanc on loopback (see tests/core/pacs/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "pacs"))
from orthanc_server import PASSWORD, USER, start_orthanc  # noqa: E402

pytest.importorskip("dicomweb_client")


@pytest.fixture
def orthanc_with_ct(tmp_path, dicom_dir):  # noqa: ANN001
    server = start_orthanc(tmp_path / "orthanc", sorted((dicom_dir / "ct_3slice_dcmqi" / "dicom").glob("*.dcm")))
    yield server
    server.stop()


def test_search_retrieve_and_discard(qtbot, orthanc_with_ct, tmp_path, monkeypatch):  # noqa: ANN001
    from PySide6.QtCore import QSettings

    from salm_desktop.gui.pacs_dialog import COLUMNS, SETTINGS_KEY, PacsDialog

    monkeypatch.setenv("SALM_PACS_USER", USER)
    monkeypatch.setenv("SALM_PACS_PASSWORD", PASSWORD)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    dialog = PacsDialog(settings)
    qtbot.addWidget(dialog)
    spec = f"dicomweb:{orthanc_with_ct.dicomweb}"
    dialog.server.setEditText(spec)
    dialog.modality.setText("ct")
    dialog.search()
    qtbot.waitUntil(lambda: not dialog.running and dialog.table.rowCount() == 1, timeout=20000)
    assert dialog.table.item(0, COLUMNS.index("Accession")).text() == "03086212"
    assert PacsDialog(settings).saved_servers() == [spec] and PASSWORD not in str(settings.value(SETTINGS_KEY))
    dialog.table.selectRow(0)
    with qtbot.waitSignal(dialog.retrieved, timeout=20000) as got:
        dialog.retrieve_selected()
    folder = Path(got.args[0])
    assert len(list(folder.rglob("*.dcm"))) == 3 and (folder.parent.stat().st_mode & 0o077) == 0
    dialog.discard()
    assert not folder.parent.exists()

    dialog.server.setEditText(f"dicomweb:{orthanc_with_ct.dicomweb}")
    monkeypatch.setenv("SALM_PACS_PASSWORD", "wrong")
    dialog.search()
    # the failure reaches the dialog as a queued signal, after the worker's thread has ended
    qtbot.waitUntil(lambda: "HTTP 401" in dialog.status.text(), timeout=20000)
