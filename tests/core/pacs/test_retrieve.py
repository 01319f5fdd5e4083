"""Retrieval from a real Orthanc over DICOMweb (QIDO-RS/WADO-RS) and DIMSE (C-FIND/C-GET)."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import stat
import tempfile

import pydicom
import pytest

from orthanc_server import start_orthanc

from salm_desktop.core.pacs import Credentials, PacsError, Selection, private_retrieval, retrieve
from salm_desktop.core.pacs.endpoints import parse_endpoint
from salm_desktop.core.progress import Progress


def _pixels_hash(folder):  # noqa: ANN001
    return sorted(hashlib.sha256(pydicom.dcmread(f).PixelData).hexdigest() for f in folder.rglob("*.dcm"))


def test_dicomweb_study_url_retrieves_the_three_slices(orthanc, credentials, ct_files, ct_uids, tmp_path):
    result = retrieve(f"dicomweb:{orthanc.dicomweb}/studies/{ct_uids['study']}", tmp_path / "a", credentials=credentials)
    assert result.instances == 3 and result.sop_uids == ct_uids["sops"] and result.series == [ct_uids["series"]]
    assert _pixels_hash(tmp_path / "a") == sorted(hashlib.sha256(pydicom.dcmread(f).PixelData).hexdigest() for f in ct_files)
    # neutral local names: no original UID appears in a path
    assert all(ct_uids["study"] not in str(p) and ct_uids["series"] not in str(p) for p in (tmp_path / "a").rglob("*"))


def test_dicomweb_series_and_accession_selection(orthanc, credentials, ct_uids, tmp_path):
    by_series = retrieve(f"dicomweb:{orthanc.dicomweb}", tmp_path / "s",
                         Selection(study=ct_uids["study"], series=[ct_uids["series"]]), credentials=credentials)
    by_accession = retrieve(f"dicomweb:{orthanc.dicomweb}", tmp_path / "acc", Selection(accession=ct_uids["accession"]),
                            credentials=credentials)
    assert by_series.sop_uids == by_accession.sop_uids == ct_uids["sops"]
    with pytest.raises(PacsError, match="series 1.2.3.4 not found"):
        retrieve(f"dicomweb:{orthanc.dicomweb}", tmp_path / "x", Selection(study=ct_uids["study"], series=["1.2.3.4"]),
                 credentials=credentials)
    with pytest.raises(PacsError, match="no study with accession number 000000"):
        retrieve(f"dicomweb:{orthanc.dicomweb}", tmp_path / "y", Selection(accession="000000"), credentials=credentials)


def test_dimse_c_find_and_c_get(orthanc, ct_uids, tmp_path):
    by_study = retrieve(orthanc.dimse, tmp_path / "a", Selection(study=ct_uids["study"]))
    by_accession = retrieve(orthanc.dimse, tmp_path / "b", Selection(accession=ct_uids["accession"]))
    assert by_study.sop_uids == by_accession.sop_uids == ct_uids["sops"]
    assert _pixels_hash(tmp_path / "a") == _pixels_hash(tmp_path / "b")


def test_missing_study_wrong_aet_closed_port_and_bad_password_are_clear(orthanc, credentials, ct_uids, tmp_path):
    with pytest.raises(PacsError, match=r"study 1\.2\.999 not found"):
        retrieve(f"dicomweb:{orthanc.dicomweb}/studies/1.2.999", tmp_path / "a", credentials=credentials)
    with pytest.raises(PacsError, match=r"study 1\.2\.999 not found"):
        retrieve(orthanc.dimse, tmp_path / "b", Selection(study="1.2.999"))
    with pytest.raises(PacsError, match="association rejected.*'WRONGAET'"):
        retrieve(f"dimse:WRONGAET@127.0.0.1:{orthanc.dicom_port}", tmp_path / "c", Selection(study=ct_uids["study"]))
    from orthanc_server import free_port

    closed = free_port()
    with pytest.raises(PacsError, match="cannot reach the server"):
        retrieve(f"dimse:ORTHANC@127.0.0.1:{closed}", tmp_path / "d", Selection(study=ct_uids["study"]))
    with pytest.raises(PacsError, match="cannot reach the server"):
        retrieve(f"dicomweb:http://127.0.0.1:{closed}/dicom-web/studies/{ct_uids['study']}", tmp_path / "e")
    with pytest.raises(PacsError, match="HTTP 401 .authentication failed") as info:
        retrieve(f"dicomweb:{orthanc.dicomweb}/studies/{ct_uids['study']}", tmp_path / "f",
                 credentials=Credentials(user="steward", password="wrong-password-xyz"))
    assert "wrong-password-xyz" not in str(info.value)


def test_private_folder_is_0700_and_removed_after_success_and_failure(orthanc, credentials, ct_uids, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    source = (parse_endpoint(f"dicomweb:{orthanc.dicomweb}/studies/{ct_uids['study']}"), None)
    with private_retrieval([source], credentials=credentials) as (folders, results):
        root = folders[0].parent
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert results[0].instances == 3
    assert not root.exists()
    with pytest.raises(RuntimeError):
        with private_retrieval([source], credentials=credentials) as (folders, _):
            root = folders[0].parent
            raise RuntimeError("the job failed")
    assert not root.exists() and list(tmp_path.iterdir()) == []


def test_server_killed_mid_c_get_gives_a_clear_message_and_no_leftovers(tmp_path, ct_files, ct_uids, monkeypatch):
    server = start_orthanc(tmp_path / "orthanc", ct_files, auth=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))

    def crash_after_first(ev) -> None:  # noqa: ANN001
        if ev.stage == "retrieve" and ev.done >= 1:
            server.kill()

    try:
        with pytest.raises(PacsError, match="connection was lost|cannot reach"):
            with private_retrieval([(parse_endpoint(server.dimse), Selection(study=ct_uids["study"]))],
                                   progress=Progress(crash_after_first)):
                pass
    finally:
        server.stop()
    assert list(work.iterdir()) == []


def test_both_protocols_deliver_the_stored_bytes_unchanged(orthanc, credentials, ct_files, ct_uids, tmp_path):
    """Retrieval writes what the PACS stored, byte for byte (no transcoding, no re-encoding)."""
    originals = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in ct_files)
    retrieve(f"dicomweb:{orthanc.dicomweb}/studies/{ct_uids['study']}", tmp_path / "web", credentials=credentials)
    retrieve(orthanc.dimse, tmp_path / "dimse", Selection(study=ct_uids["study"]))
    for folder in ("web", "dimse"):
        got = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / folder).rglob("*.dcm"))
        if folder == "web":
            assert got == originals
        else:  # C-STORE carries the dataset, not the file: same dataset bytes, our own file meta
            assert sorted(hashlib.sha256(pydicom.dcmread(p).PixelData).hexdigest()
                          for p in (tmp_path / folder).rglob("*.dcm")) == sorted(
                hashlib.sha256(pydicom.dcmread(f).PixelData).hexdigest() for f in ct_files)



class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_https_trusts_the_given_ca_even_when_the_environment_names_another(tmp_path, monkeypatch):
    """A real TLS server with a self-signed certificate (Debian's Orthanc 1.10.1 crashes on TLS
    connections here, so Python's own server stands in for the handshake)."""
    import ssl
    import threading

    from orthanc_server import self_signed_certificate

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make the test certificate)")
    pem, ca = self_signed_certificate(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")  # does not know our CA
    url = f"dicomweb:https://127.0.0.1:{server.server_port}/dicom-web/studies/1.2.3"
    try:
        with pytest.raises(PacsError, match="study 1.2.3 not found"):  # the TLS handshake and QIDO went through
            retrieve(url, tmp_path / "a", credentials=Credentials(ca_bundle=str(ca)))
        with pytest.raises(PacsError, match="TLS error"):
            retrieve(url, tmp_path / "b", credentials=Credentials())
    finally:
        server.shutdown()


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_find_studies_by_patient_accession_date_and_modality(orthanc, credentials, ct_files, ct_uids, protocol):
    from salm_desktop.core.pacs import StudyQuery, find_studies

    ds = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    spec = f"dicomweb:{orthanc.dicomweb}" if protocol == "dicomweb" else orthanc.dimse
    date = str(ds.StudyDate)
    hits = find_studies(spec, StudyQuery(patient_id=str(ds.PatientID), accession=ct_uids["accession"],
                                         date_from=date, date_to=date, modality="CT"), credentials=credentials)
    assert [h["StudyInstanceUID"] for h in hits] == [ct_uids["study"]]
    assert hits[0]["PatientID"] == str(ds.PatientID) and hits[0]["StudyDate"] == date and "CT" in hits[0]["ModalitiesInStudy"]
    assert find_studies(spec, StudyQuery(modality="MR"), credentials=credentials) == []
    assert find_studies(spec, StudyQuery(date_to="19000101"), credentials=credentials) == []
    with pytest.raises(PacsError, match="expected YYYYMMDD"):
        find_studies(spec, StudyQuery(date_from="2020-01-01"), credentials=credentials)


def test_c_move_to_our_storage_scp_on_a_port_orthanc_knows(orthanc, ct_files, ct_uids, tmp_path):
    from orthanc_server import free_port

    port = free_port()
    orthanc.register_modality("salm-move", "SALMMOVE", port)
    mover = Credentials(local_aet="SALMMOVE", move_port=port)
    by_study = retrieve(orthanc.dimse, tmp_path / "a", Selection(study=ct_uids["study"]), credentials=mover)
    by_accession = retrieve(orthanc.dimse, tmp_path / "b", Selection(accession=ct_uids["accession"]), credentials=mover)
    assert by_study.sop_uids == by_accession.sop_uids == ct_uids["sops"] and by_study.instances == 3
    assert _pixels_hash(tmp_path / "a") == sorted(hashlib.sha256(pydicom.dcmread(f).PixelData).hexdigest() for f in ct_files)
    # the SCP listened only during the retrieval
    import socket

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    with pytest.raises(PacsError, match=r"C-MOVE of series .* failed .*is 'NOBODY' registered in the PACS as a destination"):
        retrieve(orthanc.dimse, tmp_path / "c", Selection(study=ct_uids["study"]),
                 credentials=Credentials(local_aet="NOBODY", move_port=0))
    assert not list((tmp_path / "c").rglob("*.dcm"))


def test_move_port_comes_from_the_environment():
    from salm_desktop.core.pacs import credentials_from_env

    assert credentials_from_env({"SALM_PACS_MOVE_PORT": "11112"}).move_port == 11112
    assert credentials_from_env({}).move_port is None
    with pytest.raises(PacsError, match="expected a port number"):
        credentials_from_env({"SALM_PACS_MOVE_PORT": "abc"})


@pytest.mark.parametrize("by", ["c-get", "c-move"])
def test_cancel_mid_dimse_retrieval_ends_cancelled_and_leaves_nothing(orthanc, ct_uids, tmp_path, monkeypatch, by):
    from orthanc_server import free_port

    from salm_desktop.core.progress import Cancelled

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    creds = Credentials()
    if by == "c-move":
        port = free_port()
        orthanc.register_modality("salm-cancel", "SALMCANCEL", port)
        creds = Credentials(local_aet="SALMCANCEL", move_port=port)
    progress = Progress(lambda ev: progress.cancel() if ev.stage == "retrieve" and ev.done >= 1 else None)
    with pytest.raises(Cancelled):
        with private_retrieval([(parse_endpoint(orthanc.dimse), Selection(study=ct_uids["study"]))],
                               credentials=creds, progress=progress):
            pass
    assert list(tmp_path.iterdir()) == []
