"""Robust generation (opt-in, ``ProtectSettings.robust``): expectation over transformation.

A thief may blur, median-filter, re-encode, quantize, crop or flip the protected images before
training (see ``salm_desktop/core/evaluate/defenses.py``). With ``robust=True`` the engine feeds the
surrogate not ``clip(x + delta)`` but a random transformation of it, drawn per sample from the
differentiable stand-ins below, both when it trains the surrogate and in every PGD step. The noise
is then optimized to stay a shortcut *after* such transformations (the idea of robust EM variants
and of EOT attacks). The budget and the SALM mask are unchanged: the transformations act only on
the model input, never on the stored noise.

Transformations (equal probability, per sample): identity, flip + random shift (up to 2 pixels),
Gaussian blur (sigma 0.5 to 1.5), 3x3 median filter, additive Gaussian noise (sigma 4/255) and
bit-depth reduction to 3 to 5 bits with a straight-through gradient. JPEG has no exact
differentiable stand-in here; blur, median, noise and quantization cover its low-pass and
quantization effects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAMES = ("identity", "shift_flip", "blur", "median", "noise", "quantize")


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from salm_desktop.core.evaluate.defenses import blur_differentiable

    return blur_differentiable(x, sigma)


def _median(x: torch.Tensor) -> torch.Tensor:
    from monai.networks.layers import median_filter

    dims = x.ndim - 2
    return median_filter(x, kernel_size=(3,) * dims, spatial_dims=dims)


def _shift_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    spatial = list(range(2, x.ndim))
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(spatial[-1])
    xp = F.pad(x, [pad] * (2 * len(spatial)), mode="replicate")
    offs = torch.randint(0, 2 * pad + 1, (len(spatial),), generator=gen).tolist()
    return xp[(slice(None), slice(None), *[slice(o, o + s) for o, s in zip(offs, x.shape[2:])])]


def _quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = float(2**bits - 1)
    q = torch.round(x * levels) / levels
    return x + (q - x).detach()  # straight-through: forward quantized, gradient of the identity


MODES = ("off", "full", "pgd")


def robust_mode(value) -> str:
    """``ProtectSettings.robust`` -> "off" | "full" (EOT in surrogate training and PGD) | "pgd"
    (EOT only in the PGD steps, each sample untransformed with probability 1/2)."""
    if value is None or value is False or value == "off":
        return "off"
    if value is True or value == "full":
        return "full"
    if value == "pgd":
        return "pgd"
    raise ValueError(f"robust must be off, full (True) or pgd, got {value!r}")


def random_transform(x: torch.Tensor, gen: torch.Generator, p_identity: float | None = None) -> torch.Tensor:
    """A random differentiable transformation of every sample of ``x`` (N x 1 x spatial, in [0, 1]).

    ``gen`` is a CPU generator (reproducible per seed); the output has the shape, device and dtype of
    ``x`` and stays in [0, 1]. ``p_identity``: probability that a sample stays untransformed
    (default: the identity is one of the six choices).
    """
    n = x.shape[0]
    choice = torch.randint(0, len(NAMES), (n,), generator=gen)
    if p_identity is not None:
        keep = torch.rand(n, generator=gen) < p_identity
        choice = torch.where(keep, torch.zeros_like(choice), torch.randint(1, len(NAMES), (n,), generator=gen))
    choice = choice.to(x.device)
    sigma = float(0.5 + torch.rand((), generator=gen))
    bits = int(torch.randint(3, 6, (), generator=gen))
    noise = (torch.randn(x.shape, generator=gen) * (4 / 255)).to(x.device, x.dtype)
    candidates = [
        x,
        _shift_flip(x, gen),
        _blur(x, sigma),
        _median(x),
        x + noise,
        _quantize(x, bits),
    ]
    out = torch.zeros_like(x)
    for k, cand in enumerate(candidates):
        sel = (choice == k).view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        out = out + sel * cand
    return out.clamp(0.0, 1.0)
