"""Countermeasures a thief may apply to a protected training set before or while training.

Each defense works on normalized images: float tensors ``N x 1 x H x W`` (or ``N x 1 x D x H x W``)
with values in [0, 1]. There are three kinds:

* dataset-level transforms, applied once to the whole training split before training
  (``blur``, ``median``, ``jpeg75``, ``jpeg10``, ``bitdepth``): :func:`prepare_training_set`;
* batch-level random augmentation, applied to every training batch (``augment``):
  :func:`defend_batch`;
* adversarial training (``advtrain``): every training batch is replaced by its PGD adversarial
  version against the model being trained (L-inf 8/255, 3 steps of 3/255, random start):
  :func:`defend_batch` with the model and labels.

Only the training split is transformed; the test split stays clean (the thief's model meets real
patients). The efficacy check applies the same defense to the clean-data run, so every number comes
with the cost the defense has for the thief.

Names combine with ``+`` (``jpeg10+augment``): dataset-level parts run in the order given, then the
batch-level ones.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

#: every single defense by name; ``none`` (or None) trains without one
DEFENSES = ("none", "augment", "blur", "median", "jpeg75", "jpeg10", "bitdepth", "advtrain")

DESCRIPTIONS = {
    "none": "no countermeasure",
    "augment": "random crop (2-pixel padding, replicate) and horizontal flip on every batch",
    "blur": "Gaussian blur, sigma 1 pixel, once on the training set",
    "median": "3x3 median filter, once on the training set",
    "jpeg75": "JPEG re-encoding at quality 75 (8-bit, Pillow), once on the training set",
    "jpeg10": "JPEG re-encoding at quality 10 (8-bit, Pillow), once on the training set",
    "bitdepth": "bit-depth reduction to 3 bits (8 grey levels), once on the training set",
    "advtrain": "adversarial training: PGD L-inf 8/255, 3 steps of 3/255, random start, on every batch",
}

BLUR_SIGMA = 1.0
BITS = 3
ADV_EPS = 8 / 255
ADV_STEPS = 3
ADV_STEP = 3 / 255
AUG_PAD = 2

DATASET_LEVEL = ("blur", "median", "jpeg75", "jpeg10", "bitdepth")
BATCH_LEVEL = ("augment", "advtrain")


def parse_defense(name: str | None) -> tuple[str, ...]:
    """``None``/``"none"`` -> ``()``; ``"jpeg10+augment"`` -> ``("jpeg10", "augment")``.

    Raises ValueError with one line listing the valid names.
    """
    if name is None:
        return ()
    parts = [p.strip().lower() for p in str(name).split("+") if p.strip()]
    for p in parts:
        if p not in DEFENSES:
            raise ValueError(f"unknown defense {p!r}; choose one of {', '.join(DEFENSES)} (combine with '+')")
    return tuple(p for p in parts if p != "none")


def canonical(name: str | None) -> str | None:
    """The normalized name (``None`` for no defense); validates."""
    parts = parse_defense(name)
    return "+".join(parts) if parts else None


# -- dataset-level transforms ----------------------------------------------------------------------
def gaussian_kernel(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    radius = max(1, int(truncate * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur_differentiable(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with replicate borders (MONAI's GaussianFilter pads with zeros, which
    darkens the image border); differentiable, 2D or 3D."""
    k = gaussian_kernel(sigma).to(x.device, x.dtype)
    r = (k.numel() - 1) // 2
    dims = x.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    out = x
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = k.numel()
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = r
        out = conv(F.pad(out, pad, mode="replicate"), k.view(shape))
    return out


def gaussian_blur(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Gaussian blur of every image (sigma in pixels, truncated at 3 sigma, replicate borders)."""
    with torch.no_grad():
        out = blur_differentiable(x.float(), sigma)
    return out.clamp(0.0, 1.0)


def median3(x: torch.Tensor) -> torch.Tensor:
    """3x3 (3x3x3 for volumes) median filter of every image (MONAI's median_filter, replicate border)."""
    from monai.networks.layers import median_filter

    dims = x.ndim - 2
    with torch.no_grad():
        out = median_filter(x.float(), kernel_size=(3,) * dims, spatial_dims=dims)
    return out.clamp(0.0, 1.0)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encode every 2D image (or every slice of a volume) as an 8-bit greyscale JPEG with Pillow."""
    from PIL import Image

    arr = np.rint(x.detach().cpu().numpy().clip(0.0, 1.0) * 255.0).astype(np.uint8)
    flat = arr.reshape(-1, arr.shape[-2], arr.shape[-1])
    out = np.empty_like(flat)
    for i, img in enumerate(flat):
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("L"))
    return torch.from_numpy(out.reshape(arr.shape).astype(np.float32) / 255.0)


def bit_depth(x: torch.Tensor, bits: int = BITS) -> torch.Tensor:
    """Quantize to ``2**bits`` equally spaced levels in [0, 1]."""
    levels = float(2**bits - 1)
    return torch.round(x.clamp(0.0, 1.0) * levels) / levels


_DATASET_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "blur": gaussian_blur,
    "median": median3,
    "jpeg75": lambda x: jpeg(x, 75),
    "jpeg10": lambda x: jpeg(x, 10),
    "bitdepth": bit_depth,
}


def prepare_training_set(x: torch.Tensor, defense: str | None) -> torch.Tensor:
    """Apply the dataset-level parts of ``defense`` to the whole (normalized) training set."""
    out = x
    for part in parse_defense(defense):
        if part in _DATASET_FNS:
            out = _DATASET_FNS[part](out).to(dtype=x.dtype)
    return out


# -- batch-level ---------------------------------------------------------------------------------------
def augment(x: torch.Tensor, gen: torch.Generator, pad: int = AUG_PAD) -> torch.Tensor:
    """Random horizontal flip and random crop of every image after ``pad`` pixels of replicate padding
    (each image its own flip and offset)."""
    n = x.shape[0]
    spatial = list(range(2, x.ndim))
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, *([1] * (x.ndim - 1))).to(x.device), x.flip(spatial[-1]), x)
    mode = "replicate" if x.ndim <= 5 else "constant"
    xp = F.pad(x, [pad] * (2 * len(spatial)), mode=mode)
    offs = torch.randint(0, 2 * pad + 1, (n, len(spatial)), generator=gen).tolist()
    out = torch.empty_like(x)
    for i, off in enumerate(offs):
        sl = [i, slice(None)] + [slice(o, o + s) for o, s in zip(off, x.shape[2:])]
        out[i] = xp[tuple(sl)]
    return out


def pgd_adversarial(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                    eps: float = ADV_EPS, steps: int = ADV_STEPS, step: float = ADV_STEP) -> torch.Tensor:
    """Error-*maximizing* PGD examples (L-inf ``eps``, random start, sign steps) against ``model``
    in its current mode; the model's parameters get no gradient."""
    was = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        d = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(x.device, x.dtype)
        d = (x + d).clamp(0, 1) - x
        for _ in range(steps):
            d.requires_grad_(True)
            loss = F.cross_entropy(model(x + d), y)
            (g,) = torch.autograd.grad(loss, d)
            d = (d.detach() + step * g.sign()).clamp(-eps, eps)
            d = (x + d).clamp(0, 1) - x
    finally:
        for p, r in zip(model.parameters(), was):
            p.requires_grad_(r)
    return (x + d).detach()


def defend_batch(defense: str | None, x: torch.Tensor, gen: torch.Generator,
                 model: torch.nn.Module | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """Apply the batch-level parts of ``defense`` to one training batch (already on the model's device)."""
    for part in parse_defense(defense):
        if part == "augment":
            x = augment(x, gen)
        elif part == "advtrain":
            if model is None or y is None:
                raise ValueError("advtrain needs the model and the labels of the batch")
            x = pgd_adversarial(model, x, y, gen)
    return x


def describe(defense: str | None) -> str:
    parts = parse_defense(defense)
    return "; then ".join(DESCRIPTIONS[p] for p in parts) if parts else DESCRIPTIONS["none"]
