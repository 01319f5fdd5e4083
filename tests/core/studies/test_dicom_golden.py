"""Golden test: every DICOM study in ../shared/data/dicom loads to the same series, geometry and pixels
as before ``studies/dicom.py`` was split (hashes recorded with the code of commit b9ca1da).

Regenerate only for an intended change: ``python -m tests.core.studies.test_dicom_golden``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from salm_desktop.core.studies import load_paths

# the same place as tests/conftest.py's DATA_DIR (the studies are needed at collection, for the parameters)
DATA = Path(os.environ.get("SALM_TEST_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data")).resolve() / "dicom"
GOLDEN = Path(__file__).with_name("golden_dicom_pixels.json")
# each study folder, plus each pydicom_small file alone: they share one SOPInstanceUID, so loaded
# together only the first encoding is decoded (RLE, JPEG 2000, JPEG-LS and big endian would be skipped)
STUDIES = (sorted(p.name for p in DATA.iterdir() if p.is_dir())
           + sorted(f"pydicom_small/{p.name}" for p in (DATA / "pydicom_small").glob("*.dcm"))) if DATA.is_dir() else []


def _spacing(value) -> str:
    """The slice spacing to 10 significant digits: it is computed from the positions in floating point,
    and its last digits differ between CPUs (4.000003595447254 on one, ...268 on another)."""
    return f"{value:.10g}" if isinstance(value, float) else repr(value)


def describe_study(name: str) -> dict:
    """Everything the loader says about one study: series, warnings, skipped files, pixel hashes."""
    result = load_paths([DATA / name / "dicom"] if (DATA / name / "dicom").is_dir() else [DATA / name])
    root = DATA / name.split("/")[0]
    out: dict = {"skipped": sorted(f"{s.path.relative_to(root)}: {s.reason}" for s in result.skipped), "series": []}
    for series in result.series:
        pixels = hashlib.sha256()
        samples = []
        for sample in series.samples:
            values = sample.read()
            assert values.dtype == np.float32
            pixels.update(np.ascontiguousarray(values).tobytes())
            samples.append([sample.key, list(values.shape), str(sample.source.path.relative_to(root)),
                            sample.source.frame, repr(sample.geometry), repr(sample.stored)])
        intensity = series.intensity
        out["series"].append({
            "id": series.id,
            "modality": series.modality,
            "warnings": list(series.warnings),
            "dims": repr(series.meta.get("dims")),
            "slice_spacing": _spacing(series.meta.get("slice_spacing")),
            "intensity": repr(intensity),
            "samples_sha256": hashlib.sha256(json.dumps(samples).encode()).hexdigest(),
            "pixels_sha256": pixels.hexdigest(),
            "n_samples": len(samples),
        })
    return out


def test_the_golden_record_covers_every_study():
    assert STUDIES, f"no DICOM studies found at {DATA}"
    assert sorted(json.loads(GOLDEN.read_text())) == sorted(STUDIES)


@pytest.mark.parametrize("name", STUDIES)
def test_study_loads_as_before_the_split(name):
    golden = json.loads(GOLDEN.read_text())
    assert name in golden, f"no golden record for {name}: regenerate {GOLDEN.name}"
    assert describe_study(name) == golden[name]


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({name: describe_study(name) for name in STUDIES}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
