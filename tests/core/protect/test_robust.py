"""The robust (EOT) transformations on real MedMNIST images: shape, range, seeding, identity, gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salm_desktop.core.protect.robust import random_transform, robust_mode


@pytest.fixture(scope="module")
def images(medmnist_dir):
    with np.load(medmnist_dir / "breastmnist.npz") as d:
        return torch.from_numpy(d["train_images"][:12].astype(np.float32) / 255.0)[:, None]


def test_robust_mode_reads_every_spelling_and_refuses_others():
    assert [robust_mode(v) for v in (None, False, "off", True, "full", "pgd")] == ["off", "off", "off", "full", "full", "pgd"]
    with pytest.raises(ValueError, match="robust must be off, full"):
        robust_mode("sometimes")


def test_random_transform_keeps_shape_and_range_and_is_seeded(images):
    out = random_transform(images, torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    again = random_transform(images, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    other = random_transform(images, torch.Generator().manual_seed(4))
    assert not torch.equal(out, other)
    assert not torch.equal(out, images)  # 12 samples, 6 choices: some sample was transformed


def test_identity_probability_one_leaves_the_images(images):
    out = random_transform(images, torch.Generator().manual_seed(0), p_identity=1.0)
    assert torch.equal(out, images)


def test_gradient_reaches_the_input_through_every_transformation(images):
    x = images.clone().requires_grad_(True)
    random_transform(x, torch.Generator().manual_seed(1)).sum().backward()
    assert x.grad is not None
    assert bool((x.grad.flatten(1).abs().sum(1) > 0).all())  # quantize is straight-through, median routes


def test_a_3d_volume_is_transformed_too(medmnist_dir):
    with np.load(medmnist_dir / "adrenalmnist3d.npz") as d:
        volumes = torch.from_numpy(d["train_images"][:3].astype(np.float32) / 255.0)[:, None]
    out = random_transform(volumes, torch.Generator().manual_seed(2))
    assert out.shape == volumes.shape and float(out.min()) >= 0 and float(out.max()) <= 1
