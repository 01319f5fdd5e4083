"""Faults injected into every stage (issue 21): kill -9 at seeded points of a job and of a batch,
two jobs on one output folder, disk full and read-only output during each writer.

After a kill the output is either complete and valid (every file listed in manifest.json with its
SHA-256, nothing else) or absent, and a rerun completes it. The full 20 + 20 kill points run in
benchmarks/fault_injection.py (numbers in docs/robustness.md); the suite runs a few seeded ones.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from salm_desktop.core import jobs
from salm_desktop.core.batch import BatchBusy, load_config, run_batch
from salm_desktop.core.jobs import JobError, OutputLock, protect_job, run_protect_job, write_job
from salm_desktop.core.protect import ProtectSettings

REPO = Path(__file__).resolve().parents[2]
SEED = 2026_12_21
# Seeded kill points: after the k-th progress line (a job prints 7 lines on stderr without a report, the small
# batch below 25 before its summary); distinct points, spread over load, protect, export and rename.
JOB_KILL_LINES = np.random.default_rng(SEED).permutation(np.arange(1, 8))[:3]
BATCH_KILL_LINES = np.random.default_rng(SEED + 1).permutation(np.arange(1, 26))[:3]


def _settings() -> ProtectSettings:
    return ProtectSettings(method="random", mask_ratio=0.2, seed=0, device="cpu")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_complete_and_valid(out: Path) -> None:
    """Every file of ``out`` is listed in its manifest with the right digest, and every listed file exists."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert present == set(listed), f"{out}: files {sorted(present ^ set(listed))} differ from the manifest"
    for rel, digest in listed.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, f"{out / rel}: digest mismatch"


def kill_at_line(cmd: list[str], line: int, stream: str) -> int:
    """Run ``cmd``, SIGKILL it right after its ``line``-th line on ``stream``; the number of lines seen."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL} if stream == "stdout" else \
        {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(cmd, text=True, env=env, **pipes)
    seen = 0
    for _ in getattr(proc, stream):
        seen += 1
        if seen >= line:
            proc.send_signal(signal.SIGKILL)
            break
    getattr(proc, stream).close()
    proc.wait(timeout=300)
    return seen


@pytest.fixture
def ct_copy(dicom_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "input" / "ct"
    shutil.copytree(dicom_dir / "ct_3slice_dcmqi" / "dicom", dst)
    return dst


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(jobs.PARTIAL_PREFIX)]


# -- kill -9 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("point", range(3))
def test_killed_job_leaves_a_valid_output_or_none_and_a_rerun_completes(ct_copy, tmp_path, point):
    line = int(JOB_KILL_LINES[point])
    out = tmp_path / "out"
    before = _hashes(ct_copy)
    cmd = [sys.executable, "-m", "salm_desktop.cli", "protect", str(ct_copy), "--out", str(out), "--method", "random",
           "--no-report"]
    kill_at_line(cmd, line, "stderr")
    assert _hashes(ct_copy) == before  # the inputs are never written
    if out.exists():
        assert_complete_and_valid(out)
    else:
        run_protect_job([ct_copy], out, _settings(), report=False)
        assert_complete_and_valid(out)
    assert _leftovers(tmp_path) == []  # the killed job's temporary folder is gone after the rerun


def test_killed_overwrite_restores_the_previous_output(ct_copy, tmp_path):
    out = tmp_path / "out"
    run_protect_job([ct_copy], out, _settings(), report=False)
    previous = _hashes(out)
    # The state a kill leaves between "move the old output aside" and "move the new one in".
    backup = tmp_path / f"{jobs.PARTIAL_PREFIX}old-out-abcd1234"
    backup.mkdir()
    os.replace(out, backup / "old")
    stale = tmp_path / f"{jobs.PARTIAL_PREFIX}out-zz_9yx87"
    stale.mkdir()
    (stale / "01.dcm").write_bytes(b"half written")
    with pytest.raises(JobError, match="already exists"):  # restored first, so it is not silently replaced
        run_protect_job([ct_copy], out, _settings(), report=False)
    assert {k.replace(str(backup / "old"), str(out)): v for k, v in previous.items()} == _hashes(out)
    assert _leftovers(tmp_path) == []
    run_protect_job([ct_copy], out, _settings(), report=False, overwrite=True)
    assert_complete_and_valid(out)


def _small_batch(data_dir: Path, root: Path) -> Path:
    shutil.copytree(data_dir / "dicom" / "ct_3slice_dcmqi" / "dicom", root / "cohort" / "a")
    shutil.copytree(data_dir / "dicom" / "pydicom_small" / "MR700_series_16x16", root / "cohort" / "b")
    (root / "cohort" / "b" / "bad_bits.dcm").write_bytes((root / "cohort" / "a" / "01.dcm").read_bytes()[:4000])
    config = root / "batch.toml"
    config.write_text('output = "out"\ninputs = ["cohort/a", "cohort/b"]\n[settings]\nmethod = "random"\n'
                      'labels = "clusters:2"\nseed = 5\nreport = false\n', encoding="utf-8")
    return config


@pytest.mark.parametrize("point", range(3))
def test_killed_batch_leaves_valid_outputs_or_none_and_a_rerun_completes(data_dir, tmp_path, point):
    config = _small_batch(data_dir, tmp_path)
    line = int(BATCH_KILL_LINES[point])
    cmd = [sys.executable, "-m", "salm_desktop", "batch", "--config", str(config), "--json"]
    kill_at_line(cmd, line, "stdout")
    out = tmp_path / "out"
    for job in ("a", "b"):
        if (out / job).exists():
            assert_complete_and_valid(out / job)
    result = run_batch(load_config(config))
    assert [j.status for j in result.jobs] in (["done", "done"], ["done", "already done"], ["already done", "done"],
                                               ["already done", "already done"])
    for job in ("a", "b"):
        assert_complete_and_valid(out / job)
    # besides the outputs only the job's private steward records (de-identification) may be there
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".steward")) == ["a", "b", "batch-summary.json"]


# -- two jobs on one output folder ---------------------------------------------------------------------
def test_a_second_job_on_the_same_output_folder_refuses_and_neither_is_corrupted(ct_copy, tmp_path):
    out = tmp_path / "out"
    first = protect_job([ct_copy], out, _settings())  # holds the output lock until written
    with pytest.raises(JobError, match="another SALM job is writing to"):
        run_protect_job([ct_copy], out, _settings(), report=False)
    assert not out.exists() and len(_leftovers(tmp_path)) == 0
    write_job(first, report=False)
    assert_complete_and_valid(out)
    with pytest.raises(JobError, match="already exists"):  # the lock is released; the folder is now taken
        run_protect_job([ct_copy], out, _settings(), report=False)
    assert_complete_and_valid(out)


def test_the_lock_is_released_when_the_holder_dies(ct_copy, tmp_path):
    out = tmp_path / "out"
    code = ("import sys, os; from pathlib import Path; from salm_desktop.core.jobs import OutputLock; "
            "OutputLock.acquire(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out.resolve())], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(JobError, match="another SALM job"):
        OutputLock.acquire(out.resolve())
    holder.kill()
    holder.wait(timeout=60)
    lock = OutputLock.acquire(out.resolve())  # the kernel dropped the dead holder's lock
    assert lock is not None
    lock.release()


def test_a_second_batch_on_the_same_output_root_refuses(data_dir, tmp_path):
    config = _small_batch(data_dir, tmp_path)
    (tmp_path / "out").mkdir()
    lock = OutputLock.acquire((tmp_path / "out").resolve())
    try:
        with pytest.raises(BatchBusy, match="another batch is writing to"):
            run_batch(load_config(config))
    finally:
        lock.release()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


# -- disk full / read-only output during each writer ----------------------------------------------------
def _inputs(kind: str, data_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "input" / kind
    root.mkdir(parents=True)
    if kind in ("dicom", "manifest", "report"):
        for p in sorted((data_dir / "dicom" / "ct_3slice_dcmqi" / "dicom").glob("*.dcm")):
            shutil.copy(p, root / p.name)
    elif kind == "nifti":
        shutil.copy(data_dir / "nifti" / "nibabel" / "anatomical.nii", root)
    elif kind == "volume":
        shutil.copy(data_dir / "nrrd" / "pyradiomics" / "brain1_label.nrrd", root / "brain1.nrrd")
    elif kind == "npz":
        with np.load(data_dir / "medmnist" / "breastmnist.npz") as data:
            np.savez(root / "breast.npz", train_images=data["train_images"][:16], train_labels=data["train_labels"][:16],
                     test_images=data["test_images"][:4], test_labels=data["test_labels"][:4])
    elif kind == "images":
        from PIL import Image

        with np.load(data_dir / "medmnist" / "breastmnist.npz") as data:
            for i in range(4):
                Image.fromarray(data["train_images"][i]).save(root / f"img{i}.png")
    return root


def _patch_writer(kind: str, monkeypatch, code: int) -> dict:
    calls = {"n": 0}

    def failing(real, fail_at: int = 1):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] >= fail_at:
                raise OSError(code, os.strerror(code), "injected")
            return real(*args, **kwargs)

        return wrapper

    if kind == "dicom":
        from salm_desktop.core.export import dicom as writer

        monkeypatch.setattr(writer.pydicom, "dcmwrite", failing(writer.pydicom.dcmwrite, 2))
    elif kind == "nifti":
        from salm_desktop.core.export import nifti as writer

        monkeypatch.setattr(writer.nib, "save", failing(writer.nib.save))
    elif kind == "volume":
        import SimpleITK as sitk

        monkeypatch.setattr(sitk, "WriteImage", failing(sitk.WriteImage))
    elif kind == "npz":
        monkeypatch.setattr(np, "savez", failing(np.savez))
        monkeypatch.setattr(np, "savez_compressed", failing(np.savez_compressed))
    elif kind == "images":
        from PIL import Image

        monkeypatch.setattr(Image.Image, "save", failing(Image.Image.save, 2))
    elif kind == "manifest":
        from salm_desktop.core.export import manifest

        monkeypatch.setattr(manifest, "write_manifest", failing(manifest.write_manifest))
    elif kind == "report":
        from salm_desktop.core.fidelity import report

        monkeypatch.setattr(report, "write_report", failing(report.write_report))
    return calls


@pytest.mark.parametrize("kind,code,message", [
    ("nifti", errno.ENOSPC, "no space left"), ("volume", errno.EROFS, "not writable"),
    ("npz", errno.ENOSPC, "no space left"), ("images", errno.EROFS, "not writable"),
    ("manifest", errno.ENOSPC, "no space left"), ("report", errno.EROFS, "not writable"),
    ("dicom", errno.EACCES, "not writable"),
])
def test_disk_full_or_read_only_during_each_writer_leaves_nothing(kind, code, message, data_dir, tmp_path, monkeypatch):
    inputs = _inputs(kind, data_dir, tmp_path)
    before = _hashes(inputs)
    calls = _patch_writer(kind, monkeypatch, code)
    out = tmp_path / "out"
    with pytest.raises(JobError, match=message):
        run_protect_job([inputs], out, _settings(), report=kind == "report")
    assert calls["n"] >= 1
    assert not out.exists() and _leftovers(tmp_path) == []
    assert _hashes(inputs) == before
