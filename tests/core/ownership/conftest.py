"""One keyed release of a BreastMNIST subset, shared by the ownership tests (protecting costs seconds)."""

from __future__ import annotations


import numpy as np
import pytest

from salm_desktop.core.jobs import run_protect_job
from salm_desktop.core.protect import ProtectSettings


@pytest.fixture(scope="session")
def keyed_release(medmnist_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("keyed")
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        arrays = {k: z[k] for k in z.files}
    subset = root / "input" / "breast48.npz"
    subset.parent.mkdir()
    np.savez(subset, train_images=arrays["train_images"][:48], train_labels=arrays["train_labels"][:48],
             test_images=arrays["test_images"][:16], test_labels=arrays["test_labels"][:16])
    settings = ProtectSettings(seed=0, device="cpu", max_rounds=1, pgd_steps=5, train_steps=2)
    out, keys = root / "release", root / "private" / "keys"
    result = run_protect_job([subset], out, settings, keys=keys)
    return {"input": subset, "out": out, "keys": keys, "result": result, "root": root, "settings": settings}
