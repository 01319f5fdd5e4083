"""Shared fixtures: the real studies in ../shared/data and a headless Qt platform."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Qt must never try to open a real display in tests.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# The default de-identification secret is created in a test folder, never in the user's own configuration.
os.environ.setdefault("SALM_DESKTOP_CONFIG_DIR", tempfile.mkdtemp(prefix="salm-test-config-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SALM_TEST_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"real test data not found at {DATA_DIR} (see ../shared/data/README.md)")
    return DATA_DIR


@pytest.fixture(scope="session")
def dicom_dir(data_dir: Path) -> Path:
    return data_dir / "dicom"


@pytest.fixture(scope="session")
def medmnist_dir(data_dir: Path) -> Path:
    return data_dir / "medmnist"
