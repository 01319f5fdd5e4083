"""Batch configs with PACS sources and destinations, against a real Orthanc (see conftest.py)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pydicom
import pytest

from salm_desktop.cli import main
from salm_desktop.core.batch import ConfigError, load_config, run_batch
from salm_desktop.core.pacs import journal_path

SETTINGS = {"method": "random", "mask_ratio": 0.25, "device": "cpu", "report": False, "seed": 1}


def _write_config(folder: Path, inputs: list[str], jobs: list[str] = (), **settings) -> Path:
    values = {**SETTINGS, **settings}
    lines = ['output = "out"', f"inputs = {json.dumps(inputs)}", "[settings]",
             *[f"{k} = {json.dumps(v)}" for k, v in values.items()], *jobs]
    path = folder / "batch.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _instances(server) -> dict[str, str]:  # noqa: ANN001
    rows = server.session().get(f"{server.rest}/instances?expand", timeout=30).json()
    return {r["MainDicomTags"]["SOPInstanceUID"]: r["ID"] for r in rows}


def _release_sops(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in folder.rglob("*.dcm")}


@pytest.mark.parametrize("inputs, jobs, send, message", [
    (["dimse:ORTHANC@127.0.0.1:4242"], [], None, "a dimse: source needs study"),
    (["dicomweb:http://127.0.0.1:8042/dicom-web"], [], None, "give …/studies/UID"),
    (["dimse:ORTHANC@nohost"], [], None, "expected dimse:AET@HOST:PORT"),
    ([], ["[[jobs]]", 'name = "a"', 'inputs = ["."]', 'study = "1.2.3"'], None, "need a dicomweb: or dimse: input"),
    (["dicomweb:http://h:1/dicom-web/studies/1.2"], [], ["pacs:x"], "send: pacs:x: expected"),
])
def test_bad_pacs_entries_are_refused_when_the_config_loads(tmp_path, inputs, jobs, send, message):
    path = _write_config(tmp_path, inputs, jobs, **({"send": send} if send else {}))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_jobs_are_named_without_uids_and_fingerprinted_by_source_not_folder(tmp_path, ct_uids):
    source = f"dicomweb:http://127.0.0.1:1/dicom-web/studies/{ct_uids['study']}"
    config = load_config(_write_config(tmp_path, [source], send=["dimse:A@127.0.0.1:1"]))
    job = config.jobs[0]
    assert job.name.startswith("pacs-") and ct_uids["study"] not in job.name and job.inputs == []
    assert job.options["pacs_sources"][0]["spec"] == source and job.options["send"] == ["dimse:A@127.0.0.1:1"]
    assert load_config(config.path).jobs[0].fingerprint() == job.fingerprint()


def test_batch_from_pacs_killed_mid_send_resumes_and_sends_each_instance_exactly_once(
        orthanc, ct_uids, pacs_env, tmp_path, monkeypatch, capsys):
    """kill -9 of `salm-protect batch` once the second job's send had the PACS confirm an instance."""
    import os
    import subprocess
    import sys

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    web = f"dicomweb:{orthanc.dicomweb}/studies/{ct_uids['study']}"
    jobs = ["[[jobs]]", 'name = "by-accession"', f"inputs = [{json.dumps(orthanc.dimse)}]",
            f"accession = {json.dumps(ct_uids['accession'])}", "seed = 2"]
    path = _write_config(tmp_path, [web], jobs, send=[orthanc.dimse])
    before = set(_instances(orthanc))
    cmd = [sys.executable, "-m", "salm_desktop", "batch", "--config", str(path), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path / "tmp"), "OMP_NUM_THREADS": "1"})
    retrieved = 0
    for line in proc.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        retrieved += event.get("event") == "log" and "retrieved" in event.get("message", "")
        if event.get("job") == "by-accession" and event.get("stage") == "send" and event.get("done", 0) >= 1:
            proc.kill()
            break
    proc.wait(timeout=60)
    assert proc.returncode == -9 and retrieved == 2
    out = tmp_path / "out"
    first, second = out / load_config(path).jobs[0].name, out / "by-accession"
    assert len(journal_path(first).read_text().splitlines()) == 3
    confirmed = len(journal_path(second).read_text().splitlines())
    assert 1 <= confirmed <= 3

    assert main(["batch", "--config", str(path), "--json"]) == 0  # the same command: nothing pulled, the rest sent
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert not [e for e in events if e["event"] == "log" and "retrieved" in e["message"]]
    done = [e for e in events if e["event"] == "job"]
    assert [j["status"] for j in done] == ["already done", "already done"]
    assert [(r["sent"], r["already_sent"]) for j in done for r in j["summary"]["send"]] == [(0, 3), (3 - confirmed, confirmed)]
    protected = _release_sops(first) | _release_sops(second)
    assert len(protected) == 6 and not protected & ct_uids["sops"]
    assert set(_instances(orthanc)) == before | protected  # the originals stay, the 6 protected ones are added
    for release in (first, second):
        sent = [json.loads(line)["sop_instance_uid"] for line in journal_path(release).read_text().splitlines()]
        assert sorted(sent) == sorted(_release_sops(release))  # each exactly once
    assert [p for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("salm-locks-")] == []


def test_unreachable_source_fails_its_job_clearly_and_the_batch_goes_on(orthanc, ct_uids, pacs_env, tmp_path):
    from orthanc_server import free_port

    dead = f"dicomweb:http://127.0.0.1:{free_port()}/dicom-web/studies/{ct_uids['study']}"
    web = f"dicomweb:{orthanc.dicomweb}/studies/{ct_uids['study']}"
    result = run_batch(load_config(_write_config(tmp_path, [dead, web])))
    assert [j.status for j in result.jobs] == ["failed", "done"]
    assert "cannot reach the server" in result.jobs[0].message and not result.complete
