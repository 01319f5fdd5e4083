"""run_protect_job: safe output handling and failure paths (nothing half-written, inputs untouched)."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from salm_desktop import cli
from salm_desktop.core import jobs
from salm_desktop.core.jobs import JobError, run_protect_job
from salm_desktop.core.progress import Cancelled, Progress
from salm_desktop.core.protect import ProtectSettings
from salm_desktop.core.studies import load_paths


READS_PER_SAMPLE = 2  # the engine reads each sample once, the writer once (it was 4: a summary pass and a second export read)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _settings(**kw) -> ProtectSettings:
    return ProtectSettings(**{"method": "random", "mask_ratio": 0.2, "seed": 0, "device": "cpu", **kw})


@pytest.fixture
def ct_copy(dicom_dir, tmp_path) -> Path:
    """A private copy of the 3-slice CT (tests may delete files from it)."""
    dst = tmp_path / "input" / "ct"
    shutil.copytree(dicom_dir / "ct_3slice_dcmqi" / "dicom", dst)
    return dst


def _no_leftovers(parent: Path, out: Path) -> None:
    assert not out.exists(), f"{out} should not exist"
    assert not [p for p in parent.iterdir() if p.name.startswith(jobs.PARTIAL_PREFIX)], "temporary folder left behind"


def test_success_writes_data_manifest_and_report(ct_copy, tmp_path):
    before = _hashes(ct_copy)
    out = tmp_path / "out"
    result = run_protect_job([ct_copy], out, _settings())
    assert _hashes(ct_copy) == before
    assert sorted(p.name for p in out.iterdir()) == ["01.dcm", "02.dcm", "03.dcm", "manifest.json", "officer-report.html", "officer-report.pdf",
                                                      "report.html", "report.pdf"]
    manifest = json.loads(result.manifest.read_text())
    files = {f["path"]: f["sha256"] for f in manifest["files"]}
    for name in ("01.dcm", "02.dcm", "03.dcm", "report.html", "report.pdf"):
        assert files[name] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert manifest["settings"]["method"] == "random" and manifest["seed"] == 0 and manifest["device"] == "cpu"
    assert manifest["software"]["version"]
    assert "uid_map" not in manifest and len(result.uid_map) == 4  # 3 instances + 1 series; the map is in the steward record
    text = result.manifest.read_text() + (out / "report.html").read_text()
    for secret in ("JANCT000", "PatientName", "PatientID"):  # the CT's patient name; no patient attributes
        assert secret not in text
    for key in ("method", "epsilon", "mask_ratio", "rounds", "seconds", "device", "samples",
                "fraction_pixels_changed", "max_abs_change_native"):
        assert key in result.summary


def test_existing_output_folder_is_refused_unless_overwrite(ct_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(JobError, match="already exists"):
        run_protect_job([ct_copy], out, _settings(), report=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    run_protect_job([ct_copy], out, _settings(), report=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "01.dcm").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(jobs.PARTIAL_PREFIX)]


def test_empty_existing_output_folder_is_used(ct_copy, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    run_protect_job([ct_copy], out, _settings(), report=False)
    assert (out / "02.dcm").is_file()


def test_output_inside_the_input_tree_is_refused(ct_copy, tmp_path):
    before = _hashes(ct_copy.parent)
    with pytest.raises(JobError, match="inside the input"):
        run_protect_job([ct_copy.parent], ct_copy / "protected", _settings(), report=False)
    with pytest.raises(JobError, match="contains the input"):
        run_protect_job([ct_copy], tmp_path, _settings(), report=False, overwrite=True)
    assert _hashes(ct_copy.parent) == before


def test_a_file_where_the_output_folder_should_be(ct_copy, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(JobError, match="not a folder"):
        run_protect_job([ct_copy], blocker, _settings(), report=False)
    with pytest.raises(JobError, match="is a file"):
        run_protect_job([ct_copy], blocker / "out", _settings(), report=False)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("code,message", [(errno.ENOSPC, "no space left"), (errno.EROFS, "not writable"),
                                          (errno.EACCES, "not writable")])
def test_write_failure_leaves_nothing(ct_copy, tmp_path, monkeypatch, code, message):
    import pydicom

    from salm_desktop.core.export import dicom as dicom_writer

    calls = {"n": 0}
    real = pydicom.dcmwrite

    def failing(path, ds, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the first file is already written when the disk fills up
            raise OSError(code, "injected", str(path))
        return real(path, ds, **kw)

    monkeypatch.setattr(dicom_writer.pydicom, "dcmwrite", failing)
    before = _hashes(ct_copy)
    out = tmp_path / "out"
    with pytest.raises(JobError, match=message):
        run_protect_job([ct_copy], out, _settings(), report=False)
    assert calls["n"] == 2
    _no_leftovers(tmp_path, out)
    assert _hashes(ct_copy) == before


def test_unwritable_output_parent(ct_copy, tmp_path):
    with pytest.raises(JobError, match="cannot create the output folder|not a folder|is a file|not writable"):
        run_protect_job([ct_copy], Path("/proc/salm-test-out"), _settings(), report=False)
    assert not Path("/proc/salm-test-out").exists()


def test_cancel_during_export_leaves_nothing(ct_copy, tmp_path):
    before = _hashes(ct_copy)
    seen = []

    def listener(ev):
        seen.append(ev.stage)
        if ev.stage == "export" and ev.done >= 1:
            progress.cancel()

    progress = Progress(listener)
    out = tmp_path / "new" / "parents" / "out"
    with pytest.raises(Cancelled):
        run_protect_job([ct_copy], out, _settings(), progress=progress)
    assert "export" in seen
    assert not (tmp_path / "new").exists()  # the parent folders the job made are gone too
    assert _hashes(ct_copy) == before


def test_cancel_during_report_leaves_nothing(ct_copy, tmp_path):
    def listener(ev):
        if ev.stage == "report":
            progress.cancel()

    progress = Progress(listener)
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        run_protect_job([ct_copy], out, _settings(), progress=progress)
    _no_leftovers(tmp_path, out)


def test_input_file_disappearing_during_export_is_skipped(ct_copy, tmp_path):
    victim = ct_copy / "02.dcm"

    def listener(ev):
        if ev.stage == "export" and victim.exists():
            victim.unlink()

    out = tmp_path / "out"
    result = run_protect_job([ct_copy], out, _settings(), progress=Progress(listener))
    assert [s.path.name for s in result.skipped] == ["02.dcm"]
    assert "could not be read again" in result.skipped[0].reason
    assert sorted(p.name for p in out.glob("*.dcm")) == ["01.dcm", "03.dcm"]
    manifest = json.loads(result.manifest.read_text())
    assert manifest["skipped"] == [{"path": "02.dcm", "reason": result.skipped[0].reason}]
    assert "02.dcm" in (out / "report.html").read_text()


def test_input_file_disappearing_before_protection_is_skipped(ct_copy, tmp_path):
    loaded = load_paths([ct_copy])
    (ct_copy / "03.dcm").unlink()
    result = run_protect_job([ct_copy], tmp_path / "out", _settings(), loaded=loaded, report=False)
    assert [(s.path.name, s.reason) for s in result.skipped] == [("03.dcm", "input file disappeared after loading")]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.dcm")) == ["01.dcm", "02.dcm"]


def test_unlabelled_dicom_needs_clusters(ct_copy, tmp_path):
    with pytest.raises(JobError, match="clusters"):
        run_protect_job([ct_copy], tmp_path / "out", _settings(method="salm", max_rounds=1), report=False)
    assert not (tmp_path / "out").exists()


# -- the CLI ------------------------------------------------------------------------------------------
def test_cli_protect_json_last_line(ct_copy, tmp_path, capsys):
    code = cli.main(["protect", str(ct_copy), "--out", str(tmp_path / "o"), "--method", "random", "--epsilon", "4/255",
                     "--mask-ratio", "0.1", "--seed", "2", "--no-report", "--json"])
    assert code == cli.EXIT_OK
    last = capsys.readouterr().out.strip().splitlines()[-1]
    data = json.loads(last)
    for key in ("method", "epsilon", "mask_ratio", "rounds", "seconds", "device", "samples", "fraction_pixels_changed",
                "max_abs_change_native", "out", "manifest", "report", "skipped"):
        assert key in data
    assert data["method"] == "random" and data["epsilon"] == pytest.approx(4 / 255) and data["mask_ratio"] == 0.1
    assert data["samples"] == 3 and data["report"] is None and data["skipped"] == []
    assert 0 < data["fraction_pixels_changed"] <= 0.1
    assert data["max_abs_change_native"] <= round(4 / 255 * 2000) + 1


def test_cli_exit_codes(ct_copy, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("x")
    assert cli.main(["protect", str(ct_copy), "--out", str(out), "--method", "random"]) == cli.EXIT_USAGE
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["protect", str(ct_copy), "--out", str(tmp_path / "p"), "--epsilon", "eight"]) == cli.EXIT_USAGE
    assert cli.main(["protect", str(ct_copy), "--out", str(tmp_path / "p"), "--labels", "clusters:1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and "8/255" in err

    victim = ct_copy / "01.dcm"
    real = jobs._load

    def load_then_delete(inputs, labels, progress):
        loaded = real(inputs, labels, progress)
        victim.unlink()
        return loaded

    import unittest.mock as mock

    with mock.patch.object(jobs, "_load", load_then_delete):
        code = cli.main(["protect", str(ct_copy), "--out", str(tmp_path / "q"), "--method", "random", "--no-report"])
    assert code == cli.EXIT_PARTIAL


def test_cli_cancel_exit_code(ct_copy, tmp_path, monkeypatch):
    def cancelled(*a, **k):
        raise Cancelled("cancelled by the user")

    monkeypatch.setattr(jobs, "run_protect_job", cancelled)
    assert cli.main(["protect", str(ct_copy), "--out", str(tmp_path / "c")]) == cli.EXIT_CANCELLED


def test_parse_fraction():
    from salm_desktop.core.options import OptionError, parse_fraction

    assert parse_fraction("8/255") == pytest.approx(8 / 255)
    assert parse_fraction(" 0.05 ") == 0.05
    for bad in ("", "a/b", "1/0", "nan"):
        with pytest.raises(OptionError):
            parse_fraction(bad)
    for bad in ("--epsilon=1/0", "--mask-ratio=lots", "--labels=clusters:1"):
        assert cli.main(["protect", "in", "--out", "out", bad]) == cli.EXIT_USAGE


def test_writes_a_given_protection_result_without_protecting_again(ct_copy, tmp_path, monkeypatch):
    from salm_desktop.core import protect as protect_pkg
    from salm_desktop.core.protect import protect_series

    loaded = load_paths([ct_copy])
    reviewed = protect_series(loaded.series, _settings(seed=11))
    try:
        monkeypatch.setattr(protect_pkg, "protect_series", lambda *a, **k: pytest.fail("protected again"))
        result = run_protect_job([ct_copy], tmp_path / "out", _settings(seed=99), loaded=loaded, result=reviewed,
                                 report=False)
        back = load_paths([tmp_path / "out"]).series[0]
        series = loaded.series[0]
        for i in range(len(series.samples)):
            import numpy as np

            np.testing.assert_array_equal(back.samples[i].read(), reviewed.protected(series.id, i))
        assert result.summary["seed"] == 11
        reviewed.protected(series.id, 0)  # still usable: the caller owns it
    finally:
        reviewed.close()
    with pytest.raises(JobError, match="LoadResult"):
        run_protect_job([ct_copy], tmp_path / "out2", _settings(), result=object(), report=False)


def test_input_file_disappearing_during_protection_is_skipped(ct_copy, tmp_path):
    victim = ct_copy / "01.dcm"

    def listener(ev):
        if ev.stage == "protect" and victim.exists():
            victim.unlink()  # gone while the engine reads the samples

    result = run_protect_job([ct_copy], tmp_path / "out", _settings(), progress=Progress(listener), report=False)
    assert [(s.path.name, s.reason) for s in result.skipped] == [("01.dcm", "input file disappeared after loading")]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.dcm")) == ["02.dcm", "03.dcm"]
    assert result.summary["samples"] == 2


def test_cli_efficacy_file_goes_into_report_and_manifest(ct_copy, tmp_path):
    eff = tmp_path / "eff.json"
    eff.write_text("training...\n" + json.dumps({"arch": "cnn", "protected": {"final": {"auc": 0.5432}}}) + "\n")
    out = tmp_path / "o"
    assert cli.main(["protect", str(ct_copy), "--out", str(out), "--method", "random", "--efficacy", str(eff)]) == cli.EXIT_OK
    assert "0.5432" in (out / "report.html").read_text(encoding="utf-8")
    assert json.loads((out / "manifest.json").read_text())["efficacy"]["protected"]["final"]["auc"] == 0.5432
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert cli.main(["protect", str(ct_copy), "--out", str(tmp_path / "p"), "--efficacy", str(bad)]) == cli.EXIT_USAGE


def test_protect_skipping_unreadable_fails_clearly_when_nothing_readable_is_left(dicom_dir, tmp_path):
    from salm_desktop.core.jobs import protect_skipping_unreadable
    from salm_desktop.core.protect import ProtectSettings
    from salm_desktop.core.studies import load_paths

    data = (dicom_dir / "pydicom_small" / "MR_small_jp2klossless.dcm").read_bytes()
    fragment = data.find(b"\xfe\xff\x00\xe0", data.find(b"\xfe\xff\x00\xe0") + 8) + 8
    broken = tmp_path / "broken_j2k.dcm"
    broken.write_bytes(data[: fragment + 2] + b"\0" * 2000 + data[fragment + 2002:])
    series = load_paths([broken]).series
    assert len(series) == 1  # the header passes the scan; only decoding fails
    with pytest.raises(JobError, match="nothing left to protect.*broken_j2k.dcm"):
        protect_skipping_unreadable(series, ProtectSettings(method="random", seed=0, device="cpu"))


def test_the_change_figures_are_measured_once_on_the_values_written(ct_copy, tmp_path, monkeypatch):
    """#17: no summary pass of the engine decodes the samples again; the export measures what it writes."""
    from collections import Counter

    from salm_desktop.core.model import Sample

    reads: Counter = Counter()
    real_read = Sample.read

    def counting_read(self):
        reads[Path(self.source.path).name] += 1
        return real_read(self)

    monkeypatch.setattr(Sample, "read", counting_read)
    result = run_protect_job([ct_copy], tmp_path / "out", _settings(), report=False)
    assert reads == {"01.dcm": READS_PER_SAMPLE, "02.dcm": READS_PER_SAMPLE, "03.dcm": READS_PER_SAMPLE}
    job = result.fidelity["job"]
    assert result.summary["fraction_pixels_changed"] == job["fraction_changed"] > 0
    assert result.summary["max_abs_change_native"] == job["max_abs_change_native"] > 0
    manifest = json.loads(result.manifest.read_text())
    assert manifest["summary"]["fraction_pixels_changed"] == manifest["fidelity"]["job"]["fraction_changed"]
