"""DIMSE over TLS against a real Orthanc (Debian's 1.10.1, DicomTlsEnabled) with certificates made by
the test: mutual TLS for C-FIND/C-GET and C-STORE, C-MOVE to our TLS storage SCP, and the clear
messages for a plain connection, a missing client certificate and an untrusted server certificate."""

from __future__ import annotations

import hashlib
import shutil

import pydicom
import pytest

from orthanc_server import free_port, self_signed_certificate, start_orthanc

from salm_desktop.core.pacs import Credentials, PacsError, Selection, retrieve, send_release


@pytest.fixture(scope="module")
def tls(tmp_path_factory):  # noqa: ANN001
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make the test certificates)")
    root = tmp_path_factory.mktemp("dicom-tls")
    made = {}
    for who in ("server", "client", "stranger"):
        (root / who).mkdir()
        _, cert = self_signed_certificate(root / who)
        made[who] = (cert, root / who / "key.pem")
    server = start_orthanc(root / "orthanc", [], auth=False, dicom_tls={
        "DicomTlsEnabled": True, "DicomTlsCertificate": str(made["server"][0]),
        "DicomTlsPrivateKey": str(made["server"][1]), "DicomTlsTrustedCertificates": str(made["client"][0]),
        "DicomTlsRemoteCertificateRequired": True})
    creds = Credentials(dimse_tls=True, ca_bundle=str(made["server"][0]), tls_cert=str(made["client"][0]),
                        tls_key=str(made["client"][1]))
    yield server, creds, made
    server.stop()


def _held(server) -> set[str]:  # noqa: ANN001
    rows = server.session().get(f"{server.rest}/instances?expand", timeout=30).json()
    return {r["MainDicomTags"]["SOPInstanceUID"] for r in rows}


def _pixels(folder) -> list[str]:  # noqa: ANN001
    return sorted(hashlib.sha256(pydicom.dcmread(f).PixelData).hexdigest() for f in folder.rglob("*.dcm"))


def test_c_store_c_find_c_get_and_c_move_over_mutual_tls(tls, ct_files, ct_uids, tmp_path):
    server, creds, _ = tls
    release = tmp_path / "release"
    release.mkdir()
    for f in ct_files:
        shutil.copy(f, release / f.name)
    report = send_release(release, server.dimse, credentials=creds, retry_wait_s=0)
    assert report.count("sent") == 3 and _held(server) == ct_uids["sops"]
    got = retrieve(server.dimse, tmp_path / "get", Selection(accession=ct_uids["accession"]), credentials=creds)
    assert got.sop_uids == ct_uids["sops"] and _pixels(tmp_path / "get") == _pixels(release)
    port = free_port()  # Orthanc connects back to our storage SCP, over TLS too
    r = server.session().put(f"{server.rest}/modalities/salm-tls", timeout=30,
                             json={"AET": "SALMTLS", "Host": "127.0.0.1", "Port": port, "UseDicomTls": True})
    r.raise_for_status()
    from dataclasses import replace

    moved = retrieve(server.dimse, tmp_path / "move", Selection(study=ct_uids["study"]),
                     credentials=replace(creds, local_aet="SALMTLS", move_port=port))
    assert moved.sop_uids == ct_uids["sops"] and _pixels(tmp_path / "move") == _pixels(release)


def test_plain_connection_missing_client_certificate_and_untrusted_server_are_told_apart(tls, ct_uids, tmp_path):
    server, creds, made = tls
    study = Selection(study=ct_uids["study"])
    with pytest.raises(PacsError, match="ended it before the association .*SALM_PACS_DIMSE_TLS=1"):
        retrieve(server.dimse, tmp_path / "a", study, credentials=Credentials())
    with pytest.raises(PacsError, match="refused our client certificate"):
        retrieve(server.dimse, tmp_path / "b", study, credentials=Credentials(dimse_tls=True, ca_bundle=creds.ca_bundle))
    stranger = Credentials(dimse_tls=True, ca_bundle=str(made["stranger"][0]), tls_cert=creds.tls_cert, tls_key=creds.tls_key)
    with pytest.raises(PacsError, match="server's certificate is not trusted .*SALM_PACS_CA_BUNDLE"):
        retrieve(server.dimse, tmp_path / "c", study, credentials=stranger)
    assert not list(tmp_path.rglob("*.dcm"))
