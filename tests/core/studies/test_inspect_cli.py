"""`salm-protect inspect` on every folder of ../shared/data, plus JSON keys and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from salm_desktop.cli import main
from salm_desktop.core.studies import SERIES_KEYS, format_inspect_report, inspect_paths

DATA_FOLDERS = [
    "dicom",
    "dicom/ct_3slice_dcmqi",
    "dicom/hitachi_shoulder_mr",
    "dicom/nih_ge_epi_fmri",
    "dicom/nih_siemens_epi_mosaic",
    "dicom/pydicom_small",
    "dicom/qin_prostate_adc_mr",
    "medmnist",
    "nifti",
    "nifti/nibabel",
    "nrrd",
]


def test_every_shared_data_folder_is_covered(data_dir):
    top = {p.name for p in data_dir.iterdir() if p.is_dir()}
    assert top <= {f.split("/")[0] for f in DATA_FOLDERS}
    dicom = {f"dicom/{p.name}" for p in (data_dir / "dicom").iterdir() if p.is_dir()}
    assert dicom <= set(DATA_FOLDERS)


@pytest.mark.parametrize("folder", DATA_FOLDERS)
def test_inspect_json_on_real_folders(data_dir, folder, capsys):
    code = main(["inspect", str(data_dir / folder), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"series", "label_maps", "skipped"}
    assert report["series"]
    for s in report["series"]:
        assert set(s) == set(SERIES_KEYS)
        assert isinstance(s["samples"], int) and s["samples"] > 0
        assert s["intensity_range"] is not None and s["intensity_range"][0] <= s["intensity_range"][1]
        assert sum(s["label_counts"].values()) == s["samples"]
        assert isinstance(s["warnings"], list) and isinstance(s["files"], int)
    for item in report["skipped"]:
        assert set(item) == {"path", "reason"} and item["reason"]


def test_label_maps_beside_a_study_are_reported_as_labels_not_series(data_dir, capsys):
    code = main(["inspect", str(data_dir / "dicom" / ".." / "dicom" / "ct_3slice_dcmqi")])
    out = capsys.readouterr().out
    assert code == 0
    series_lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(series_lines) == 1 and "dicom CT" in series_lines[0]
    assert "_seg.nrrd" not in "".join(series_lines)
    maps = out.split("Label maps")[1].split("Skipped:")[0]
    assert {"heart_seg.nrrd", "liver_seg.nrrd", "spine_seg.nrrd"} == {line.strip().rsplit("/", 1)[-1]
                                                                     for line in maps.splitlines()[1:] if line.strip()}
    assert "/../" not in out  # paths printed normalised
    assert out.splitlines()[0] == "1 series, 3 label map(s), 1 skipped file(s)"


def test_inspect_whole_data_dir_in_a_subprocess(data_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "salm_desktop", "inspect", str(data_dir)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "liver.dcm: DICOM SEG (Segmentation Storage) is not an image series" in proc.stdout
    assert "4D: 10 time points x 15 slices" in proc.stdout
    assert "-3024 .. 1381 HU" in proc.stdout  # the CT in Hounsfield units


def test_inspect_report_values(dicom_dir, medmnist_dir):
    report = inspect_paths([dicom_dir / "nih_ge_epi_fmri", medmnist_dir / "breastmnist.npz"])
    by_kind: dict = {}
    for s in report["series"]:
        by_kind.setdefault(s["kind"], []).append(s)
    fmri = [s for s in by_kind["dicom"]][0]
    assert fmri["samples"] == 150 and fmri["shape"] == [64, 64] and fmri["spacing"] == [3.75, 3.75, 5.0]
    assert fmri["modality"] == "MR" and fmri["files"] == 150
    assert fmri["label_counts"] == {"unlabelled": 150}
    ref = [s for s in by_kind["nifti"]][0]  # the dcm2niix reference NIfTI next to it
    assert ref["intensity_range"] == fmri["intensity_range"]
    train = by_kind["npz"][0]
    assert train["samples"] == 546 and train["label_counts"] == {"0": 147, "1": 399}
    assert train["intensity_range"] == [0.0, 255.0] and train["shape"] == [28, 28] and train["spacing"] is None
    text = format_inspect_report(report)
    assert f"[{fmri['id']}] dicom MR" in text and "labels: 0: 147, 1: 399" in text


def test_nothing_loadable_exits_2(tmp_path, capsys):
    (tmp_path / "README.txt").write_text("nothing here")
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01" * 100)
    assert main(["inspect", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "Nothing loadable was found." in out and "junk.bin: not an image file" in out
    assert main(["inspect", str(tmp_path), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["series"] == [] and len(report["skipped"]) == 1


def test_missing_path_is_a_one_line_usage_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "does-not-exist")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"salm-protect: error: {tmp_path / 'does-not-exist'}: no such file or folder"


def test_bad_labels_file_is_a_one_line_usage_error(medmnist_dir, tmp_path, capsys):
    csv = tmp_path / "labels.csv"
    csv.write_text("missing.png,1\n")
    assert main(["inspect", str(medmnist_dir / "breastmnist.npz"), "--labels", f"csv:{csv}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 row(s) name missing files: line 1: missing.png" in err[0]
