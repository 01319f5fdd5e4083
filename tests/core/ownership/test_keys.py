"""Key patterns and the release mark: orthonormal, flip-symmetric, secret-seeded, inside the budget."""

from __future__ import annotations

import numpy as np
import pytest

from salm_desktop.core.ownership.keys import fresh_seed, make_keys, mark_sample


def test_patterns_are_orthonormal_and_survive_a_horizontal_flip():
    keys = make_keys((28, 28), 2, 32, seed=7)
    flat = keys.patterns.reshape(32, -1).astype(np.float64)
    assert np.allclose(flat @ flat.T, np.eye(32), atol=1e-5)
    assert np.allclose(keys.patterns, keys.patterns[:, :, ::-1], atol=1e-6)  # a thief's flip leaves the mark as it is


def test_the_seed_decides_everything_and_fresh_seeds_differ():
    a, b = make_keys((28, 28), 2, 32, seed=11), make_keys((28, 28), 2, 32, seed=11)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.patterns, b.patterns)
    c = make_keys((28, 28), 2, 32, seed=12)
    assert not np.array_equal(a.labels, c.labels)
    assert fresh_seed() != fresh_seed()
    assert make_keys((28, 28), 2, 32).seed != make_keys((28, 28), 2, 32).seed


def test_each_class_mark_points_along_its_keys():
    keys = make_keys((28, 28), 2, 32, seed=3)
    marks = keys.class_marks()
    assert np.abs(marks).max() == pytest.approx(1.0)
    proj = np.einsum("chw,khw->ck", marks, keys.patterns)  # projection of each class mark on each key pattern
    assert np.array_equal(proj.argmax(0), keys.labels)  # key j's pattern is part of class y_j's mark


def test_marked_values_stay_inside_the_protection_budget(medmnist_dir):
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        images, labels = z["train_images"][:20].astype(np.float32), z["train_labels"][:20, 0]
    keys = make_keys((28, 28), 2, 32, seed=5)
    eps = 8 / 255
    rng = np.random.default_rng(0)
    protected = np.clip(images + rng.choice([-8.0, 0.0, 8.0], size=images.shape), 0, 255)  # a protection at the budget
    for img, prot, lab in zip(images, protected, labels):
        out = mark_sample(prot, img, lab, keys, eps, 255.0, 0.0, 255.0)
        assert np.abs(out - img).max() <= 8.0 + 1e-4
        assert out.min() >= 0 and out.max() <= 255
        assert not np.array_equal(out, prot)


def test_unsupported_shapes_and_counts_are_refused():
    with pytest.raises(ValueError, match="2D"):
        make_keys((8, 8, 8), 2)
    with pytest.raises(ValueError, match="at most"):
        make_keys((4, 4), 2, 32)
    with pytest.raises(ValueError, match="two classes"):
        make_keys((28, 28), 1)
