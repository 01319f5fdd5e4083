"""Label-agnostic pseudo-labels: features and seeded k-means on real MedMNIST images."""

from __future__ import annotations

import numpy as np
import pytest

from salm_desktop.core.protect.clusters import intensity_features, kmeans


@pytest.fixture(scope="module")
def breast(medmnist_dir):
    with np.load(medmnist_dir / "breastmnist.npz") as d:
        return d["train_images"][:40].astype(np.float32) / 255.0


def test_features_of_2d_and_3d_samples(breast, medmnist_dir):
    f2 = intensity_features(breast[0])
    assert f2.shape == (8 * 8 + 5,) and np.isfinite(f2).all()
    assert f2[64] == pytest.approx(float(breast[0].mean()), abs=1e-6)  # the mean follows the pooled image
    with np.load(medmnist_dir / "adrenalmnist3d.npz") as d:
        volume = d["train_images"][0].astype(np.float32) / 255.0
    f3 = intensity_features(volume)
    assert f3.shape == (4 * 4 * 4 + 5,) and np.isfinite(f3).all()


def test_kmeans_separates_two_kinds_of_images_and_is_seeded(breast):
    # the real images and their negatives: two groups the features tell apart (one dark original of 40
    # falls with the negatives; the figure is pinned so that a worse clustering fails)
    images = np.concatenate([breast, 1.0 - breast[:25]])
    features = np.stack([intensity_features(x) for x in images])
    labels = kmeans(features, 2, seed=0)
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1}
    negatives = set(labels[40:].tolist())
    assert len(negatives) == 1
    assert int((labels[:40] != negatives.pop()).sum()) >= 39
    assert labels[0] == 0  # clusters are numbered by size: the originals' cluster is the larger one
    assert np.array_equal(labels, kmeans(features, 2, seed=0))


def test_kmeans_needs_as_many_samples_as_clusters(breast):
    features = np.stack([intensity_features(x) for x in breast[:3]])
    with pytest.raises(ValueError, match="3 samples cannot form 4 clusters"):
        kmeans(features, 4)
