"""The release record the data-protection officer signs (issue 15 item 4): officer-report.html/.pdf.

Read back with poppler's pdftotext (an independent reader): page 1 carries the change in HU, the
operator and purpose, the de-identification codes, the device that ran, the evaluation verdict, the
release fingerprint and the sign-off block, and none of the engine's internal setting names.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from salm_desktop.cli import main as cli_main

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs poppler-utils (pdftotext)")

FAST = ["--method", "random", "--device", "cpu", "--seed", "1"]
# internal names the issue found on the old first page; the officer's page must speak plainly
INTERNAL = ("pgd_steps", "mask_scope", "step_size", "init zero", "train_steps", "recompute_mask", "early_exit_loss",
            "device auto", "surrogate_lr", "local_mean_free")


def _pages(pdf: Path) -> list[str]:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    n = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    return [subprocess.run(["pdftotext", "-layout", "-f", str(i), "-l", str(i), str(pdf), "-"], capture_output=True,
                           text=True, check=True).stdout for i in range(1, n + 1)]


@pytest.fixture
def ct_dicom(dicom_dir: Path) -> Path:
    return dicom_dir / "ct_3slice_dcmqi" / "dicom"


def test_page_one_is_what_the_officer_signs(ct_dicom, tmp_path, capsys):
    out = tmp_path / "ct-release"
    code = cli_main(["protect", str(ct_dicom), "--out", str(out), *FAST, "--epsilon", "12HU",
                     "--operator", "Dr. A. Steward", "--purpose", "Liver segmentation study with University X",
                     "--retain-patient-characteristics"])
    assert code == 0
    assert f"release record for the data-protection officer: {out / 'officer-report.pdf'}" in capsys.readouterr().out
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    fingerprint = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    # the report carries the manifest's hash, so the manifest cannot list it; everything else it lists
    listed = {f["path"] for f in manifest["files"]}
    assert {"officer-report.pdf", "officer-report.html"} & listed == set()
    assert {p.name for p in out.iterdir()} - listed == {"manifest.json", "officer-report.pdf", "officer-report.html"}

    pages = _pages(out / "officer-report.pdf")
    assert len(pages) >= 2
    first = " ".join(pages[0].split())
    ct = next(s for s in manifest["fidelity"]["series"] if s["modality"] == "CT")
    assert f"largest {ct['max_abs_change_native']:.3g} HU" in first and "budget at most ±12 HU" in first
    assert "Operator Dr. A. Steward" in first and "Purpose Liver segmentation study with University X" in first
    assert "CT: 1 series, 3 images" in first
    assert "Device actually used the computer's CPU (no GPU)" in first
    assert "113100 Basic Application Confidentiality Profile" in first and "113108 Retain Patient Characteristics" in first
    assert "patient characteristics (sex, age, size, weight)" in first.split("Kept")[1].split("Replaced")[0]
    assert fingerprint in first
    assert "not measured with this release" in first
    for line in ("Residual risks", "Sign-off", "Data-protection officer", "Signature"):
        assert line in first
    for name in INTERNAL:
        assert name not in first, name
    # the technical pages follow: every setting with its meaning; no near-empty page
    rest = " ".join(" ".join(p.split()) for p in pages[1:])
    assert "pgd_steps 20 optimisation steps on the noise in each round" in rest
    assert all(len(p.split()) > 60 for p in pages[:-1])

    html = (out / "officer-report.html").read_text()
    data = json.loads(re.search(r"<script type='application/json' id='officer-data'>(.*?)</script>", html).group(1))
    assert data["fingerprint"] == fingerprint and data["operator"] == "Dr. A. Steward" and data["deidentified"]
    # no identity of the source in the officer's documents (names, IDs, Study UID)
    source = pydicom.dcmread(sorted(ct_dicom.glob("*.dcm"))[0], stop_before_pixels=True)
    text = first + rest + html
    for value in (str(source.PatientName), source.PatientID, source.StudyInstanceUID, source.SOPInstanceUID):
        assert not re.search(rf"(?<![0-9.]){re.escape(value)}(?![0-9.])", text), value


def test_keep_identity_is_said_on_page_one(ct_dicom, tmp_path):
    out = tmp_path / "internal"
    assert cli_main(["protect", str(ct_dicom), "--out", str(out), *FAST, "--keep-identity"]) == 0
    first = " ".join(_pages(out / "officer-report.pdf")[0].split())
    assert first.count("IDENTITY KEPT: not for release outside the hospital") >= 2  # the banner and the row
    assert "De-identified NO." in first and "Operator not given" in first
    assert cli_main(["protect", str(ct_dicom), "--out", str(tmp_path / "none"), *FAST, "--no-report"]) == 0
    assert not (tmp_path / "none" / "officer-report.pdf").exists()


@pytest.fixture
def breast_small(medmnist_dir: Path, tmp_path: Path) -> Path:
    """The first 64/16/48 images of the real BreastMNIST splits."""
    source = np.load(medmnist_dir / "breastmnist.npz")
    path = tmp_path / "in" / "breastmnist.npz"
    path.parent.mkdir()
    n = {"train": 64, "val": 16, "test": 48}
    np.savez(path, **{f"{s}_{k}": source[f"{s}_{k}"][:c] for s, c in n.items() for k in ("images", "labels")})
    return path


@pytest.fixture
def one_thread():
    """Two torch threads on a shared 2-core machine cost ten times the CPU of one (measured: 64 s vs 4.7 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_protect_evaluate_puts_the_verdict_in_the_report(breast_small, tmp_path, one_thread):
    out = tmp_path / "breast-release"
    code = cli_main(["protect", str(breast_small), "--out", str(out), *FAST, "--evaluate", "--evaluate-epochs", "1",
                     "--operator", "A. Steward", "--purpose", "benchmark"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    efficacy = manifest["efficacy"]
    assert efficacy["train_samples"] == 64 and efficacy["test_samples"] == 48 and efficacy["epochs"] == 1
    assert list(efficacy["thieves"]) == ["cnn-sgd-aug-1ep"] and "protect --evaluate" in efficacy["quick"]
    verdict = efficacy["verdict"]
    # the thief trained on the release's own protected split: its numbers differ from the clean run's
    protected_train = np.load(out / "breastmnist.npz")["train_images"]
    assert not np.array_equal(protected_train, np.load(breast_small)["train_images"])
    first = " ".join(_pages(out / "officer-report.pdf")[0].split())
    assert f"{verdict['verdict'].upper()} against 1 thief model(s) trained on this release" in first
    assert f"ranking power max(AUC, 1-AUC) {verdict['rank_power_final']:.3g} at its last epoch" in first
    assert f"on clean data {verdict['clean_rank_power']:.3g}" in first
    # the fidelity report and the manifest carry the same evaluation
    assert verdict["verdict"] in (out / "report.html").read_text()


def test_evaluate_refuses_what_it_cannot_measure_before_any_work(ct_dicom, breast_small, tmp_path, capsys):
    out = tmp_path / "never"
    assert cli_main(["protect", str(ct_dicom), "--out", str(out), *FAST, "--evaluate"]) == 2
    err = capsys.readouterr().err
    assert "--evaluate:" in err and "no 'train'" in err and str(ct_dicom) in err
    assert cli_main(["protect", str(breast_small), str(ct_dicom), "--out", str(out), *FAST, "--evaluate"]) == 2
    assert "exactly one labelled input" in capsys.readouterr().err
    assert cli_main(["protect", str(breast_small), "--out", str(out), *FAST, "--evaluate-epochs", "2"]) == 2
    assert "need --evaluate" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("never.steward").exists()


def test_evaluate_report_folds_a_later_run_into_the_officer_report(breast_small, tmp_path, one_thread, capsys):
    out = tmp_path / "release"
    assert cli_main(["protect", str(breast_small), "--out", str(out), *FAST, "--operator", "A. Steward"]) == 0
    manifest_before = (out / "manifest.json").read_bytes()
    data_before = (out / "breastmnist.npz").read_bytes()
    assert "not measured with this release" in _pages(out / "officer-report.pdf")[0]
    capsys.readouterr()
    code = cli_main(["evaluate", "--protected", str(out / "breastmnist.npz"), "--clean", str(breast_small),
                     "--thieves", "cnn-sgd-aug", "--epochs", "1", "--json", "--report", str(out)])
    assert code == 0
    verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["verdict"]
    first = " ".join(_pages(out / "officer-report.pdf")[0].split())
    assert f"{verdict['verdict'].upper()} against 1 thief model(s)" in first and "Operator A. Steward" in first
    assert "not part of manifest.json and not covered by the fingerprint" in first
    assert hashlib.sha256(manifest_before).hexdigest() in first
    assert (out / "manifest.json").read_bytes() == manifest_before and (out / "breastmnist.npz").read_bytes() == data_before
    assert not list(out.glob(".*partial"))
    # a folder that is not a release is refused before any thief is trained
    assert cli_main(["evaluate", "--protected", str(out / "breastmnist.npz"), "--clean", str(breast_small),
                     "--epochs", "1", "--report", str(tmp_path)]) == 2
    assert "not a finished release" in capsys.readouterr().err
