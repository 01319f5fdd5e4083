"""Surrogate networks: one network for every input size, strided stem for large inputs (real images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salm_desktop.core.protect.surrogates import build_surrogate, downsample_factor, fold_batch_norms


def test_downsample_factor_brings_the_smallest_side_to_about_64():
    assert downsample_factor((28, 28)) == 1 and downsample_factor((64, 64)) == 1
    assert downsample_factor((128, 200)) == 2 and downsample_factor((512, 512)) == 8
    assert downsample_factor((28, 28, 28)) == 1


@pytest.mark.parametrize("name", ["auto", "cifar_resnet", "small_cnn"])
def test_surrogates_classify_real_2d_images_and_pass_input_gradients(name, medmnist_dir):
    with np.load(medmnist_dir / "breastmnist.npz") as d:
        x = torch.from_numpy(d["train_images"][:4].astype(np.float32) / 255.0)[:, None].requires_grad_(True)
    torch.manual_seed(0)
    net = build_surrogate(name, 2, 3, (28, 28))
    out = net(x)
    assert out.shape == (4, 3)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and float(x.grad.abs().sum()) > 0


def test_a_large_slice_goes_through_the_strided_stem(dicom_dir):
    from salm_desktop.core.studies import load_paths

    (series,) = load_paths([dicom_dir / "ct_3slice_dcmqi" / "dicom"]).series
    native = series.samples[0].read()
    assert native.shape == (512, 512)
    x = torch.from_numpy(series.intensity.normalize(native))[None, None]
    torch.manual_seed(0)
    net = build_surrogate("auto", 2, 2, native.shape).eval()
    strided = [m for m in net.stem.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 3  # 512 -> 64
    with torch.no_grad():
        assert net(x).shape == (1, 2)


def test_3d_surrogate_and_bad_requests(medmnist_dir):
    with np.load(medmnist_dir / "adrenalmnist3d.npz") as d:
        x = torch.from_numpy(d["train_images"][:2].astype(np.float32) / 255.0)[:, None]
    torch.manual_seed(0)
    assert build_surrogate("cifar_resnet", 3, 2, (28, 28, 28))(x).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown surrogate 'vgg'"):
        build_surrogate("vgg", 2, 2, (28, 28))
    with pytest.raises(ValueError, match="only 2D and 3D samples"):
        build_surrogate("auto", 4, 2, (8, 8, 8, 8))


@pytest.mark.parametrize("dims, shape", [(2, (1, 1, 28, 28)), (2, (1, 1, 512, 512)), (3, (1, 1, 28, 28, 28))])
def test_folded_batch_norms_compute_the_same_function_and_gradient(dims, shape):
    """precision="fp32_fast": the fixed surrogate with its batch norms folded into the convolutions gives
    the same logits and the same input-gradient signs (what PGD uses) as the network it came from."""
    from torch import nn

    torch.manual_seed(0)
    model = build_surrogate("auto", dims, 2, shape[2:])
    x = torch.rand(4, *shape[1:])
    model.train()
    with torch.no_grad():
        model(x)  # running statistics that are not the identity
    model.eval()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(model.train())
    model.eval()
    folded = fold_batch_norms(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())

    def grad(net):
        z = x.clone().requires_grad_(True)
        out = net(z)
        (g,) = torch.autograd.grad(out[:, 1].sum() - out[:, 0].sum(), z)
        return out.detach(), g

    (a, ga), (b, gb) = grad(model), grad(folded)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert float((torch.sign(ga) == torch.sign(gb)).float().mean()) > 0.999
