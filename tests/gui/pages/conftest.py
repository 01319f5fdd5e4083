"""The presenter tests' real studies: loaded (and the BreastMNIST subset protected) once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from salm_desktop.gui import services

sys.path.insert(0, str(Path(__file__).parent))
from presenter_studies import loaded_state, tiny_settings  # noqa: E402


@pytest.fixture(scope="session")
def breast_study(tmp_path_factory, medmnist_dir) -> tuple[Path, dict[str, np.ndarray]]:
    """A real study: 48 training images of BreastMNIST (28x28) and 16 of each other split, and its arrays."""
    folder = tmp_path_factory.mktemp("breast-study")
    with np.load(medmnist_dir / "breastmnist.npz") as d:
        arrays = {k: d[k][:48] if k.startswith("train") else d[k][:16] for k in d.files}
    np.savez_compressed(folder / "breast.npz", **arrays)
    return folder / "breast.npz", arrays


@pytest.fixture(scope="session")
def protected_breast(breast_study):
    """The study loaded and protected as the wizard does it (tests read it; the export test writes it)."""
    path, arrays = breast_study
    settings = tiny_settings()
    state = loaded_state([path], settings)
    run = services.protect(state.selected_series, settings)
    state.protect_result, state.protect_settings = run.result, settings.copy()
    state.protected_ids = [s.id for s in run.series]
    yield state, arrays
    run.result.close()
