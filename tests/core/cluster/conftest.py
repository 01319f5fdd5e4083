"""A small real cohort and its plain-batch output, shared by the cluster tests."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from salm_desktop.core.batch import load_config, run_batch

# SALM with one min-min round: real torch work per unit (so the threads pin matters), seconds per unit.
SETTINGS = {"method": "salm", "labels": "clusters:2", "seed": 3, "max_rounds": 1, "threads": 1, "report": False}


def write_config(root: Path, output: str, **overrides) -> Path:
    values = {**SETTINGS, **overrides}
    lines = [f'output = "{output}"', 'inputs = ["cohort/study1"]', "[settings]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = root / f"{output}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pixel_digests(folder: Path) -> dict[str, str]:
    """sha256 of every protected data file of a job folder (the DICOM files)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in ("", ".dcm")}


@pytest.fixture(scope="module")
def cohort_root(data_dir: Path, tmp_path_factory) -> Path:
    """One job of two units of small real MR DICOM series (16 and 21 samples of at most 72x72 pixels)."""
    root = tmp_path_factory.mktemp("cluster")
    study = root / "cohort" / "study1"
    fmri = data_dir / "dicom" / "nih_ge_epi_fmri" / "dicom"
    (study / "fmri").mkdir(parents=True)
    for path in sorted(fmri.glob("*.dcm"))[:16]:
        shutil.copy2(path, study / "fmri" / path.name)
    shutil.copytree(data_dir / "dicom" / "nih_siemens_epi_mosaic" / "dicom", study / "mosaic")
    shutil.copytree(data_dir / "dicom" / "pydicom_small" / "MR700_series_16x16", study / "mr700")
    shutil.copytree(data_dir / "dicom" / "hitachi_shoulder_mr" / "dicom", study / "shoulder")
    return root


@pytest.fixture(scope="module")
def plain_pixels(cohort_root: Path) -> dict[str, str]:
    """What the plain (in-process) batch writes for the cohort."""
    config = load_config(write_config(cohort_root, "plain"))
    result = run_batch(config)
    assert [j.status for j in result.jobs] == ["done"] and result.jobs[0].units_total == 2
    digests = pixel_digests(cohort_root / "plain" / "study1")
    assert len(digests) == 29  # the mosaic is one file of 10 slices
    return digests


@pytest.fixture(scope="module")
def local_cluster(cohort_root: Path):
    """One local:2 cluster for the module (starting one costs seconds)."""
    pytest.importorskip("distributed", reason="the cluster extra is not installed")
    from salm_desktop.core.cluster import open_cluster

    with open_cluster("local:2", output=cohort_root, inputs=[cohort_root / "cohort" / "study1"]) as executor:
        yield executor
