"""No single bad file stops a job (issue 21): headers that lie, special files, the memory limit.

Hostile cases (tests/core/studies/hostile_cases.py) are real files whose header fields lie. Each
must either load (pixels readable) or be skipped with a reason naming it, at scan time or as a
per-file pixel error, while the real CT slices in the same folder are protected.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from salm_desktop import cli
from salm_desktop.core.jobs import JobError, run_protect_job
from salm_desktop.core.protect import ProtectSettings
from salm_desktop.core.studies import load_paths
from salm_desktop.core.studies.limits import PixelReadError, memory_limit

sys.path.insert(0, str(Path(__file__).parent))
import hostile_cases  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("hostile_worker.py")
CT_SLICES = ("01.dcm", "02.dcm", "03.dcm")


def _settings() -> ProtectSettings:
    return ProtectSettings(method="random", mask_ratio=0.2, seed=0, device="cpu")


@pytest.fixture
def ct_folder(dicom_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    shutil.copytree(dicom_dir / "ct_3slice_dcmqi" / "dicom", folder)
    return folder


def _bad_bit_depth(ct_folder: Path) -> Path:
    ds = pydicom.dcmread(ct_folder / "01.dcm")
    ds.BitsAllocated = 13
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".21"
    ds.save_as(ct_folder / "bad_bits.dcm", enforce_file_format=False)
    return ct_folder / "bad_bits.dcm"


def _lying_nifti(folder: Path, data_dir: Path) -> Path:
    raw = bytearray((data_dir / "nifti" / "nibabel" / "anatomical.nii").read_bytes())
    raw[40:48] = np.array([3, 4000, 4000, 4000], dtype=">i2").tobytes()  # claims 128 GB of int16
    target = folder / "liar.nii"
    target.write_bytes(bytes(raw))
    return target


# -- the two failures of the issue --------------------------------------------------------------
@pytest.mark.parametrize("bad", ["bit_depth", "nifti", "both"])
def test_bad_file_beside_real_slices_is_skipped_and_the_slices_are_protected(ct_folder, data_dir, tmp_path, capsys, bad):
    names = []
    if bad in ("bit_depth", "both"):
        names.append(_bad_bit_depth(ct_folder).name)
    if bad in ("nifti", "both"):
        names.append(_lying_nifti(ct_folder, data_dir).name)
    out = tmp_path / "out"
    code = cli.main(["protect", str(ct_folder), "--out", str(out), "--method", "random", "--no-report", "--json"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_PARTIAL, captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in out.glob("*.dcm")) == list(CT_SLICES)
    document = json.loads(captured.out.strip().splitlines()[-1])
    assert document["samples"] == 3
    reasons = {Path(s["path"]).name: s["reason"] for s in document["skipped"]}
    assert sorted(reasons) == sorted(names)
    if "bad_bits.dcm" in reasons:
        assert "BitsAllocated 13" in reasons["bad_bits.dcm"]
        assert "skipped: " in captured.err and "bad_bits.dcm" in captured.err
    if "liar.nii" in reasons:
        assert "4000x4000x4000" in reasons["liar.nii"] and "68002 bytes" in reasons["liar.nii"]


def test_a_file_that_fails_only_when_its_pixels_are_decoded_is_skipped(ct_folder, dicom_dir, tmp_path):
    data = (dicom_dir / "pydicom_small" / "MR_small_jp2klossless.dcm").read_bytes()
    fragment = data.find(b"\xfe\xff\x00\xe0", data.find(b"\xfe\xff\x00\xe0") + 8) + 8
    (ct_folder / "broken_j2k.dcm").write_bytes(data[: fragment + 2] + b"\0" * 2000 + data[fragment + 2002 :])
    assert len(load_paths([ct_folder]).series) == 2  # the header is fine: found at scan time
    result = run_protect_job([ct_folder], tmp_path / "out", _settings(), report=False)
    assert [(s.path.name, "cannot decode pixel data" in s.reason) for s in result.skipped] == [("broken_j2k.dcm", True)]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.dcm")) == list(CT_SLICES)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["path"] for s in manifest["skipped"]] == ["broken_j2k.dcm"]


def test_a_job_fails_only_when_nothing_loadable_is_left(ct_folder, data_dir, tmp_path):
    bad = _bad_bit_depth(ct_folder)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    shutil.move(bad, only_bad / bad.name)
    _lying_nifti(only_bad, data_dir)
    with pytest.raises(JobError, match="nothing to protect.*BitsAllocated 13"):
        run_protect_job([only_bad], tmp_path / "out", _settings(), report=False)
    assert not (tmp_path / "out").exists()


# -- structure-aware fuzzing ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory, request) -> tuple[Path, list]:
    data_dir = Path(request.config.rootpath) / ".." / "shared" / "data"
    if not data_dir.is_dir():
        data_dir = Path("/work/shared/data")
    folder = tmp_path_factory.mktemp("hostile")
    return folder, hostile_cases.write_cases(data_dir.resolve(), folder)


def test_every_lying_header_loads_or_is_skipped_with_a_reason(hostile):
    folder, cases = hostile
    assert len(cases) > 300 and {c.family for c in cases} >= {"dicom", "nifti", "nrrd", "mha", "png", "jpeg", "npz"}
    env = dict(os.environ, SALM_MEMORY_LIMIT="64M", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(WORKER), *[str(folder / c.name) for c in cases]],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_name = {r["path"]: r for r in lines if "path" in r}
    assert len(by_name) == len(cases), "the worker stopped early"
    outcomes = Counter(r["outcome"] for r in by_name.values())
    assert outcomes["aborted"] == 0, [r for r in by_name.values() if r["outcome"] == "aborted"]
    assert outcomes["skipped"] > 200 and outcomes["loaded"] > 20 and outcomes["pixel_skip"] > 5
    for case in cases:
        record = by_name[case.name]
        if case.expect == "skip":  # an impossible header is refused before any pixel is touched
            assert record["outcome"] == "skipped", (case, record)
        if record["outcome"] in ("skipped", "pixel_skip"):
            assert record["reason"].strip(), (case, record)
        if record["outcome"] == "pixel_skip":
            assert record["names_file"], (case, record)
    assert lines[-1]["max_rss_mb"] < 1024, f"peak memory {lines[-1]['max_rss_mb']:.0f} MB on hostile files"


def test_hostile_files_beside_real_slices_do_not_stop_protect(hostile, ct_folder, tmp_path, monkeypatch):
    folder, cases = hostile
    rng = np.random.default_rng(21)
    chosen = [cases[i] for i in sorted(rng.choice(len(cases), size=48, replace=False))]
    chosen += [c for c in cases if c.name in ("bomb__8GiB_claim.nii.gz", "brain1_crop__data_file_dev_zero.nrrd")]
    for case in chosen:
        shutil.copy(folder / case.name, ct_folder / case.name)
    monkeypatch.setenv("SALM_MEMORY_LIMIT", "64M")
    result = run_protect_job([ct_folder], tmp_path / "out", _settings(), report=False)
    written = {p.name for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert set(CT_SLICES) <= written
    skipped = {s.path.name: s.reason for s in result.skipped}
    for case in chosen:  # every hostile file is either protected or named with a reason
        assert case.name in written or skipped.get(case.name, "").strip(), case
        if case.expect == "skip":
            assert case.name in skipped and case.name not in written, case


# -- special files ---------------------------------------------------------------------------------
def test_special_files_are_skipped_with_a_reason_and_never_opened(ct_folder, tmp_path):
    os.mkfifo(ct_folder / "pipe.dcm")  # opening it for reading would hang the scan
    (ct_folder / "zero.dcm").symlink_to("/dev/zero")
    (ct_folder / "loop_a").symlink_to("loop_b")
    (ct_folder / "loop_b").symlink_to("loop_a")
    (ct_folder / "dangling.dcm").symlink_to("nowhere.dcm")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(ct_folder / "sock.dcm"))
    raw_folder = os.fsencode(ct_folder)
    with open(raw_folder + b"/latin1_\xe9t\xe9.dcm", "wb") as fp:  # not valid UTF-8
        fp.write((ct_folder / "01.dcm").read_bytes())
    os.mkdir(raw_folder + b"/dir_\xff")
    try:
        result = load_paths([ct_folder])
        reasons = {s.path.name: s.reason for s in result.skipped}
        assert reasons["pipe.dcm"].startswith("named pipe (FIFO)")
        assert reasons["zero.dcm"].startswith("device file")
        assert reasons["loop_a"].startswith("symbolic link loop") and reasons["loop_b"].startswith("symbolic link loop")
        assert reasons["dangling.dcm"].startswith("broken symbolic link")
        assert reasons["sock.dcm"].startswith("socket")
        assert any("not valid UTF-8" in r and name.startswith("latin1_") for name, r in reasons.items())
        assert any("folder name is not valid UTF-8" in r for r in reasons.values())
        assert [len(s.samples) for s in result.series] == [3]
        # and a job over that folder protects the slices, lists the special files, and writes valid JSON
        out = tmp_path / "out"
        job = run_protect_job([ct_folder], out, _settings(), report=False)
        assert sorted(p.name for p in out.glob("*.dcm")) == list(CT_SLICES)
        assert len(job.skipped) == 8
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert {s["path"] for s in manifest["skipped"]} >= {"pipe.dcm", "zero.dcm", "loop_a", "sock.dcm"}
        # a special file given as the input itself
        assert load_paths([ct_folder / "pipe.dcm"]).skipped[0].reason.startswith("named pipe")
    finally:
        server.close()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root reads files whatever their mode: an unreadable file cannot be made here")
def test_unreadable_file_and_folder_are_skipped(ct_folder):
    (ct_folder / "secret.dcm").write_bytes((ct_folder / "01.dcm").read_bytes())
    (ct_folder / "secret.dcm").chmod(0)
    (ct_folder / "closed").mkdir()
    (ct_folder / "closed").chmod(0)
    try:
        reasons = {s.path.name: s.reason for s in load_paths([ct_folder]).skipped}
        assert reasons["secret.dcm"].startswith("not readable") and reasons["closed"].startswith("unreadable folder")
    finally:
        (ct_folder / "closed").chmod(0o755)


# -- the memory limit ------------------------------------------------------------------------------
def test_files_claiming_more_than_the_memory_limit_are_refused_before_reading(ct_folder, data_dir, monkeypatch):
    assert memory_limit() > 256 * 2**20  # the default: a fraction of this machine's RAM
    assert len(load_paths([ct_folder]).series[0].samples) == 3
    monkeypatch.setenv("SALM_MEMORY_LIMIT", "2M")  # one 512x512 CT slice needs ~3.5 MiB decoded
    assert memory_limit() == 2 * 2**20
    result = load_paths([ct_folder])
    assert not result.series and len(result.skipped) == 3
    assert all("over the limit of 2.0 MiB" in s.reason for s in result.skipped), result.skipped
    monkeypatch.setenv("SALM_MEMORY_LIMIT", "128K")  # 33x41x25 int16 needs ~200 KiB
    nifti = load_paths([data_dir / "nifti" / "nibabel" / "anatomical.nii"])
    assert not nifti.series and "over the limit of 128.0 KiB" in nifti.skipped[0].reason
    monkeypatch.setenv("SALM_MEMORY_LIMIT", "512K")
    npz = load_paths([data_dir / "medmnist" / "breastmnist.npz"])
    assert not npz.series and "over the limit" in npz.skipped[0].reason


def test_pixel_read_errors_name_the_file(tmp_path, data_dir):
    raw = (data_dir / "nifti" / "nibabel" / "anatomical.nii").read_bytes()
    import gzip

    target = tmp_path / "cut.nii.gz"
    blob = gzip.compress(raw)
    target.write_bytes(blob[: len(blob) // 2])
    (series,) = load_paths([target]).series  # the header is intact
    with pytest.raises(PixelReadError) as caught:
        for sample in series.samples:
            sample.read()
    assert caught.value.path == target and "cut.nii.gz" in str(caught.value)
