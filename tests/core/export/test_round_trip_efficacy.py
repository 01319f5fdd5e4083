"""A protected npz export, re-loaded from disk, equals the engine's in-memory result and evaluates
exactly the same (the round trip through the stored type does not weaken the protection)."""

from __future__ import annotations

import numpy as np

from salm_desktop.core.evaluate import evaluate_efficacy  # the project's own: an import error must fail, not skip
from salm_desktop.core.jobs import run_protect_job
from salm_desktop.core.protect import ProtectSettings, protect_series
from salm_desktop.core.studies import load_paths

SETTINGS = dict(method="salm", mask_ratio=0.2, max_rounds=2, pgd_steps=3, train_steps=3, batch_size=64, seed=0, device="cpu")


def test_exported_npz_equals_in_memory_and_evaluates_the_same(medmnist_dir, tmp_path):
    import torch

    torch.set_num_threads(1)
    with np.load(medmnist_dir / "breastmnist.npz") as d:
        arrays = {k: (d[k][:96] if k.startswith("train") else d[k][:48]) for k in d.files}
    src = tmp_path / "in" / "breast_subset.npz"
    src.parent.mkdir()
    np.savez_compressed(src, **arrays)

    out = tmp_path / "out"
    run_protect_job([src], out, ProtectSettings(**SETTINGS), splits=("train",), report=False)
    with np.load(out / src.name) as d:
        exported = d["train_images"]

    loaded = load_paths([src])
    train = [s for s in loaded.series if s.meta.get("split") == "train"]
    result = protect_series(train, ProtectSettings(**SETTINGS))
    try:
        series = train[0]
        in_memory = np.stack([result.protected(series.id, i) for i in range(len(series.samples))])
    finally:
        result.close()
    assert in_memory.shape[0] == 96
    np.testing.assert_array_equal(exported.astype(np.float32).reshape(in_memory.shape), in_memory)
    assert np.any(exported != arrays["train_images"])

    labels = arrays["train_labels"].reshape(-1).astype(np.int64)
    test = (arrays["test_images"], arrays["test_labels"].reshape(-1).astype(np.int64))
    a = evaluate_efficacy((exported, labels), None, test, arch="cnn", epochs=2, seed=0)
    b = evaluate_efficacy((in_memory.reshape(exported.shape).astype(np.uint8), labels), None, test, arch="cnn", epochs=2, seed=0)
    assert a["protected"]["final"] == b["protected"]["final"]
