"""Batch protection from a TOML config: config errors, exit codes, resume after cancel or crash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from salm_desktop.cli import main
from salm_desktop.core.batch import ConfigError, load_config, plan_units, run_batch
from salm_desktop.core.progress import Cancelled, Progress
from salm_desktop.core.studies import load_paths


@pytest.fixture
def cohort(data_dir: Path, tmp_path: Path) -> Path:
    """Two study folders of real DICOM; the first holds two units (a 20-slice series, and two small
    series that are protected together), the second a bad file next to a real series."""
    root = tmp_path / "cohort"
    shutil.copytree(data_dir / "dicom" / "qin_prostate_adc_mr" / "dicom", root / "study1" / "prostate")
    shutil.copytree(data_dir / "dicom" / "pydicom_small" / "MR700_series_16x16", root / "study1" / "mr700")
    shutil.copytree(data_dir / "dicom" / "hitachi_shoulder_mr" / "dicom", root / "study1" / "shoulder")
    shutil.copytree(data_dir / "dicom" / "hitachi_shoulder_mr" / "dicom", root / "study2")
    (root / "study2" / "broken.dcm").write_bytes(b"DICM but not really")
    return root


def _config(cohort: Path, **settings) -> Path:
    # no reports unless a test reads them: the report writer is tested by the test that reads the report
    values = {"method": "random", "labels": "clusters:2", "seed": 5, "report": False, **settings}
    lines = ['output = "out"', 'inputs = ["cohort/study1", "cohort/study2"]', "[settings]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = cohort.parent / "batch.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in ("", ".dcm")}


def test_units_split_large_series_and_pack_small_ones(cohort: Path) -> None:
    units = plan_units(load_paths([cohort / "study1"]))
    sizes = sorted(sum(len(s.samples) for s in u.series) for u in units)
    assert sizes == [11, 20]  # prostate alone; MR700 (7) + shoulder (4) together


def test_batch_runs_every_job_and_reports_skipped_inputs(cohort: Path, capsys) -> None:
    code = main(["batch", "--config", str(_config(cohort, report=True)), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 3  # finished, with broken.dcm skipped
    jobs = {line["job"]: line for line in lines if line["event"] == "job"}
    assert jobs["study1"]["status"] == jobs["study2"]["status"] == "done"
    assert any("broken.dcm" in s["path"] for s in jobs["study2"]["skipped"])
    assert any(line["event"] == "progress" and line["stage"] == "protect" for line in lines)
    # the background writer's log lines reach the batch listener (here the CLI's), its progress events do not
    written = [line["message"] for line in lines if line["event"] == "log" and "written" in line["message"]]
    assert len(written) == 3  # two units of study1, one of study2
    stages = {line["stage"] for line in lines if line["event"] in ("progress", "log")}
    assert stages >= {"load", "protect", "log"} and "export" not in stages  # the writer does not overdraw the bar
    out = cohort.parent / "out"
    manifest = json.loads((out / "study1" / "manifest.json").read_text())
    assert manifest["summary"]["samples"] == 31 and len(manifest["units"]) == 2
    for entry in manifest["files"]:
        assert hashlib.sha256((out / "study1" / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert (out / "study1" / "prostate" / "000000.dcm").is_file() and (out / "study1" / "report.pdf").is_file()
    # one record, one report: the job's fidelity pools its units' series, and the report (the single job's
    # writer) lists every unit with a link to the unit's own report
    fidelity = manifest["fidelity"]
    assert len(fidelity["series"]) == len(manifest["series"]) == 3 and fidelity["job"]["samples"] == 31
    pixels = sum(s["pixels"] for s in fidelity["series"])
    assert fidelity["job"]["pixels"] == pixels
    assert fidelity["job"]["max_abs_change_native"] == max(s["max_abs_change_native"] for s in fidelity["series"])
    assert fidelity["job"]["fraction_changed"] == pytest.approx(
        sum(s["fraction_changed"] * s["pixels"] for s in fidelity["series"]) / pixels)
    # the summary states the pooled figures, not a second count of its own (series of unequal size)
    assert manifest["summary"]["fraction_pixels_changed"] == fidelity["job"]["fraction_changed"]
    assert manifest["summary"]["max_abs_change_native"] == fidelity["job"]["max_abs_change_native"]
    assert manifest["summary"]["psnr_db"] == fidelity["job"]["psnr_db"]
    page = (out / "study1" / "report.html").read_text(encoding="utf-8")
    assert "id='units'" in page and "id='series-table'" in page
    for unit in manifest["units"]:
        assert f"<a href='{unit['report']}'>" in page and (out / "study1" / unit["report"]).is_file()
    summary = json.loads((out / "batch-summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["done", "done"]
    assert not [p for p in out.iterdir() if "partial" in p.name]

    # A rerun finds everything done and redoes nothing.
    assert main(["batch", "--config", str(_config(cohort, report=True))]) == 3
    assert "already done" in capsys.readouterr().out


def test_cancelled_batch_resumes_without_redoing_finished_series(cohort: Path, tmp_path: Path) -> None:
    config = load_config(_config(cohort))
    progress = Progress()

    def cancel_at_second_unit(event) -> None:
        if event.stage == "log" and "unit 2/2" in event.message:
            progress.cancel()
        if event.stage == "export" and event.done >= 1 and "unit 2/2" in " ".join(progress.messages):
            progress.cancel()

    progress.add_listener(cancel_at_second_unit)
    with pytest.raises(Cancelled):
        run_batch(config, progress)
    out = config.output
    assert not (out / "study1").exists(), "an unfinished job must not appear as output"
    partial = out / "study1.salm-batch-partial"
    state = json.loads((partial / "state.json").read_text())
    assert len(state["done"]) == 1
    # A crash in the middle of writing the second unit leaves a temporary folder behind.
    (partial / "units" / ".salm-partial-crashed").mkdir()
    (partial / "units" / ".salm-partial-crashed" / "half.dcm").write_bytes(b"half")

    resumed = run_batch(load_config(_config(cohort)))
    study1 = next(j for j in resumed.jobs if j.name == "study1")
    assert study1.status == "done" and study1.units_reused == 1
    assert not partial.exists()
    assert not list((out / "study1").rglob("half.dcm"))

    # Same seed, same data: the resumed output equals an uninterrupted run.
    reference = tmp_path / "reference"
    reference.mkdir()
    shutil.copytree(cohort, reference / "cohort")
    run_batch(load_config(_config(reference / "cohort")))
    assert _digests(out / "study1") == _digests(reference / "out" / "study1")


def test_killed_batch_resumes_with_the_same_command(cohort: Path) -> None:
    config = _config(cohort)
    cmd = [sys.executable, "-m", "salm_desktop", "batch", "--config", str(config), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    started_second = False
    for line in proc.stdout:  # kill -9 once the first unit of study1 is written and the second has started
        started_second = started_second or "unit 2/2" in line
        if started_second and "written" in line:
            proc.kill()
            break
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not (cohort.parent / "out" / "study1").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 3, rerun.stderr[-2000:]
    jobs = [json.loads(line) for line in rerun.stdout.splitlines() if '"event": "job"' in line]
    assert jobs[0]["status"] == "done" and jobs[0]["units_reused"] == 1


def test_config_errors_name_the_file_and_problem(tmp_path: Path, data_dir: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("output = 'out'\ninputs = ['missing']\n")
    with pytest.raises(ConfigError, match="bad.toml.*missing.*does not exist"):
        load_config(bad)
    bad.write_text("inputs = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad.write_text(f"output = 'out'\ninputs = ['{data_dir / 'nifti'}']\n[settings]\nmask_ratio = 'lots'\n")
    with pytest.raises(ConfigError, match="mask-ratio"):
        load_config(bad)
    bad.write_text(f"output = '{data_dir / 'nifti' / 'out'}'\ninputs = ['{data_dir / 'nifti'}']\n")
    with pytest.raises(ConfigError, match="inside the input"):
        load_config(bad)
    assert main(["batch", "--config", str(tmp_path / "none.toml")]) == 2


def test_pipelined_batch_writes_what_the_sequential_one_writes(cohort: Path, tmp_path: Path) -> None:
    """Overlapping read-ahead, compute and writing changes when things happen, never what is written."""
    def quick_salm(config_path: Path):
        config = load_config(config_path)
        for job in config.jobs:  # the real engine on a short schedule (not a batch-config option)
            job.settings = dataclasses.replace(job.settings, max_rounds=1, pgd_steps=2, train_steps=2)
        return config

    pipelined = run_batch(quick_salm(_config(cohort, method="salm")))
    sequential_root = tmp_path / "sequential"
    sequential_root.mkdir()
    shutil.copytree(cohort, sequential_root / "cohort")
    sequential = run_batch(quick_salm(_config(sequential_root / "cohort", method="salm")), pipeline=False)
    assert [j.status for j in pipelined.jobs] == [j.status for j in sequential.jobs] == ["done", "done"]
    for job in ("study1", "study2"):
        ours = _digests(cohort.parent / "out" / job)
        assert ours and ours == _digests(sequential_root / "out" / job)
    assert pipelined.jobs[0].summary["fraction_pixels_changed"] > 0.01
