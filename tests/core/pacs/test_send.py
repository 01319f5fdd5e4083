"""Pull from a real Orthanc, protect, send back (STOW-RS and C-STORE); journal, retries, errors."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import tempfile
import threading

import pydicom
import pytest
from orthanc_server import PASSWORD, start_orthanc

from salm_desktop.cli import main
from salm_desktop.core.jobs import run_protect_job
from salm_desktop.core.pacs import Credentials, journal_path, send_release
from salm_desktop.core.progress import Progress
from salm_desktop.core.protect import ProtectSettings

FAST = ["--method", "random", "--mask-ratio", "0.25", "--device", "cpu", "--no-report"]


def _instances(server) -> dict[str, str]:  # noqa: ANN001
    """SOP Instance UID -> Orthanc ID of everything the PACS holds."""
    rows = server.session().get(f"{server.rest}/instances?expand", timeout=30).json()
    return {r["MainDicomTags"]["SOPInstanceUID"]: r["ID"] for r in rows}


def _stored_hash(server, orthanc_id: str) -> str:  # noqa: ANN001
    return hashlib.sha256(server.session().get(f"{server.rest}/instances/{orthanc_id}/file", timeout=30).content).hexdigest()


def _image_type(server, orthanc_id: str) -> str:  # noqa: ANN001
    return server.session().get(f"{server.rest}/instances/{orthanc_id}/simplified-tags", timeout=30).json()["ImageType"]


def _release_sops(folder) -> set[str]:  # noqa: ANN001
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in folder.rglob("*.dcm")}


@pytest.fixture(scope="module")
def local_release(tmp_path_factory, ct_files):  # noqa: ANN001
    out = tmp_path_factory.mktemp("release") / "protected"
    run_protect_job([ct_files[0].parent], out, ProtectSettings(method="random", mask_ratio=0.25, seed=7, device="cpu"),
                    report=False)
    return out


def test_pull_protect_send_back_over_dicomweb_and_dimse(orthanc, ct_uids, original_hashes, pacs_env, tmp_path,
                                                         monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    source = f"dicomweb:{orthanc.dicomweb}/studies/{ct_uids['study']}"
    out1, out2 = tmp_path / "seed1", tmp_path / "seed2"
    assert main(["protect", source, "--out", str(out1), "--seed", "1", *FAST, "--send", f"dicomweb:{orthanc.dicomweb}"]) == 0
    assert main(["protect", orthanc.dimse, "--study", ct_uids["study"], "--out", str(out2), "--seed", "2", *FAST,
                 "--send", orthanc.dimse]) == 0
    held = _instances(orthanc)
    first, second = _release_sops(out1), _release_sops(out2)
    assert len(first) == len(second) == 3 and not first & second and not (first | second) & ct_uids["sops"]
    assert set(held) == ct_uids["sops"] | first | second  # 3 originals + 2 x 3 protected instances
    assert {_stored_hash(orthanc, held[uid]) for uid in ct_uids["sops"]} == set(original_hashes)  # originals unchanged
    assert all(_image_type(orthanc, held[uid]).startswith("DERIVED") for uid in first | second)
    # the private retrieval folder is gone (the output-folder locks of core/jobs.py live there too)
    assert [p for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("salm-locks-")] == []
    # journals sit next to the releases, not inside them; the password is nowhere
    assert journal_path(out1).parent == tmp_path and not any(".salm-send" in p.name for p in out1.rglob("*"))
    captured = capsys.readouterr()
    texts = [captured.out, captured.err] + [p.read_text(encoding="utf-8") for p in tmp_path.glob(".*salm-send*")]
    texts += [(o / "manifest.json").read_text(encoding="utf-8") for o in (out1, out2)]
    assert "3 sent" in captured.err and not any(PASSWORD in t for t in texts)

    # a rerun sends nothing again
    assert main(["send", str(out1), "--to", f"dicomweb:{orthanc.dicomweb}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (report["sent"], report["already_sent"], report["complete"]) == (0, 3, True)
    assert len(journal_path(out1).read_text(encoding="utf-8").splitlines()) == 3


def test_killed_mid_send_resumes_and_sends_each_instance_exactly_once(tmp_path, ct_files, local_release):
    server = start_orthanc(tmp_path / "orthanc", ct_files, auth=False)
    before = set(_instances(server))

    def crash_after_first(ev) -> None:  # noqa: ANN001
        if ev.stage == "send" and ev.done == 1:
            server.kill()

    try:
        report = send_release(local_release, server.dimse, progress=Progress(crash_after_first), retry_wait_s=0)
        assert (report.count("sent"), report.count("failed"), report.complete) == (1, 2, False)
        assert all("cannot reach" in i.message or "connection was lost" in i.message
                   for i in report.instances if i.status == "failed")
        server.start()
        again = send_release(local_release, server.dimse, retry_wait_s=0)
        assert (again.count("already sent"), again.count("sent"), again.complete) == (1, 2, True)
        held = set(_instances(server))
    finally:
        server.stop()
    rows = [json.loads(line) for line in journal_path(local_release).read_text(encoding="utf-8").splitlines()]
    sent = [r["sop_instance_uid"] for r in rows if r["destination"] == server.dimse]
    assert sorted(sent) == sorted(_release_sops(local_release))  # each exactly once
    assert held == before | _release_sops(local_release)
    journal_path(local_release).unlink()


def test_originals_are_never_sent_back(orthanc, ct_files, ct_uids, credentials, tmp_path):
    fake = tmp_path / "fake-release"
    fake.mkdir()
    for f in ct_files:
        shutil.copy(f, fake / f.name)
    report = send_release(fake, f"dicomweb:{orthanc.dicomweb}", original_uids=ct_uids["sops"], credentials=credentials)
    assert report.count("refused") == 3 and not report.complete
    assert not journal_path(fake).exists()


def test_http_404_and_wrong_aet_fail_at_once_and_nothing_counts_as_sent(orthanc, credentials, local_release):
    before = set(_instances(orthanc))
    report = send_release(local_release, f"dicomweb:{orthanc.rest}/no-such-root", credentials=credentials, retry_wait_s=0)
    assert report.count("failed") == 3 and all("HTTP 404" in i.message and i.attempts == 1 for i in report.instances)
    wrong = f"dimse:WRONGAET@127.0.0.1:{orthanc.dicom_port}"
    report = send_release(local_release, wrong, retry_wait_s=0)
    assert report.count("failed") == 3 and "association rejected" in report.instances[0].message
    unauthorized = send_release(local_release, f"dicomweb:{orthanc.dicomweb}",
                                credentials=Credentials(user="steward", password="not-it"), retry_wait_s=0)
    assert unauthorized.count("failed") == 3 and "HTTP 401" in unauthorized.instances[0].message
    assert set(_instances(orthanc)) == before
    assert not journal_path(local_release).exists()


class _Unavailable(http.server.BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self) -> None:  # noqa: N802
        type(self).posts += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_http_503_is_retried_then_reported_per_instance(local_release):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = send_release(local_release, f"dicomweb:http://127.0.0.1:{server.server_port}/dicom-web",
                              retries=3, retry_wait_s=0)
    finally:
        server.shutdown()
    assert [i.attempts for i in report.instances] == [3, 3, 3] and _Unavailable.posts == 9
    assert all(i.status == "failed" and "HTTP 503 (server error)" in i.message for i in report.instances)
    assert not journal_path(local_release).exists()


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["protect", str(tmp_path), "--study", "1.2.3", "--out", str(tmp_path / "o")]) == 2
    assert "need a dicomweb: or dimse: source" in capsys.readouterr().err
    assert main(["protect", "dimse:X@host", "--out", str(tmp_path / "o")]) == 2
    assert "expected dimse:AET@HOST:PORT" in capsys.readouterr().err
    assert main(["send", str(tmp_path), "--to", "dimse:A@h:1"]) == 2
    assert "not a finished release" in capsys.readouterr().err
