"""The ownership benchmark's cached protection still fits the product's MarkedResult (issue 14): the benchmark
re-uses a protected split from an earlier run, and MarkedResult asks it for ``protected_from`` (it once lost step
and the benchmark stopped at its first thief)."""

from __future__ import annotations


import numpy as np

from salm_desktop.core.evaluate import medmnist_series
from salm_desktop.core.ownership.keys import make_keys
from salm_desktop.core.ownership.release import MarkedResult


def test_a_cached_protection_is_marked_inside_the_budget(medmnist_dir, load_benchmark):
    bench = load_benchmark("ownership.py")
    series = medmnist_series(medmnist_dir / "breastmnist.npz", "train", 6)
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        clean, labels = z["train_images"][:6], z["train_labels"][:6, 0]
    # a stand-in "protected" split: +8 grey levels on the left half of every image (inside the 8/255 budget)
    protected = clean.astype(np.int16)
    protected[:, :, :14] = np.clip(protected[:, :, :14] + 8, 0, 255)
    cached = bench.CachedProtection(protected.astype(np.uint8), series.id, labels)
    marked = MarkedResult(cached, make_keys((28, 28), 2, seed=5), [series], 8 / 255)
    out = np.stack([marked.protected(series.id, i) for i in range(6)])
    change = out - clean.astype(np.float32)
    assert np.abs(change).max() <= 8.0 + 1e-3
    assert np.mean(out != protected) > 0.2  # the mark replaced part of the cached change
    assert np.array_equal(marked.labels_used(series.id), labels)
