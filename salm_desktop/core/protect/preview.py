"""The mask preview: the pixels SALM would perturb first in one sample, before any job runs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from salm_desktop.core.model import IntensityMap, Sample

from .device import resolve_device
from .masks import body_mask, topk_mask
from .surrogates import build_surrogate, downsample_factor

# -- mask preview ---------------------------------------------------------------------------------
_PREVIEW_CACHE: dict[tuple, torch.nn.Module] = {}


def _preview_model(dims: int, spatial: tuple[int, ...], seed: int, device: torch.device) -> torch.nn.Module:
    key = (dims, downsample_factor(spatial), seed, str(device))
    model = _PREVIEW_CACHE.get(key)
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            model = build_surrogate("cifar_resnet", dims, 2, spatial).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        _PREVIEW_CACHE[key] = model
    return model


def uses_class_texture(method: str, intensity: IntensityMap, ndim: int) -> bool:
    """Whether ``salm`` protects such a sample with the class texture (2D 8-bit display images) rather than
    min-min (CT, MR, other windows, 3D); docs/algorithm.md, "Which variant runs"."""
    return method == "salm" and ndim == 2 and intensity == IntensityMap.for_uint8()


def default_mask_ratio(method: str, intensity: IntensityMap, ndim: int) -> float:
    """The mask ratio ``method`` uses on such a sample when none is set (em: every pixel)."""
    from .settings import MIN_MIN_MASK_RATIO, TEXTURE_MASK_RATIO

    if method == "em":
        return 1.0
    return TEXTURE_MASK_RATIO if uses_class_texture(method, intensity, ndim) else MIN_MIN_MASK_RATIO


def preview_mask(sample: Sample, intensity: IntensityMap, mask_ratio: float, *, foreground: bool = False,
                 seed: int = 0, device: str = "auto") -> np.ndarray:
    """The pixels SALM would perturb first in ``sample`` (bool array of ``sample.shape``).

    A seeded surrogate (cached per dimensionality, input scale, seed and device) normalizes with the
    sample's own batch statistics (BatchNorm in train mode, no state is changed); the mask is the
    top ``mask_ratio`` pixels by |gradient of the loss| w.r.t. the input, optionally inside the
    foreground. It approximates the engine's first mask (the engine's surrogate is trained first).
    """
    if not 0 < mask_ratio <= 1:
        raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
    dev = resolve_device(device)
    x_np = intensity.normalize(sample.read())
    if x_np.ndim not in (2, 3):
        raise ValueError(f"{sample.source.path}: only 2D images and 3D volumes, got shape {x_np.shape}")
    fg_np = body_mask(sample.read(), intensity) if foreground else None
    if mask_ratio >= 1.0:
        return fg_np if fg_np is not None else np.ones(x_np.shape, dtype=bool)
    model = _preview_model(x_np.ndim, x_np.shape, seed, dev)
    x = torch.from_numpy(np.clip(x_np, 0, 1))[None, None].to(dev).requires_grad_(True)
    bn_modes = [(m, m.training, m.track_running_stats) for m in model.modules()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    try:
        for m, _, _ in bn_modes:  # batch statistics without touching the running buffers
            m.train()
            m.track_running_stats = False
            m._saved = (m.running_mean, m.running_var)
            m.running_mean, m.running_var = None, None
        label = int(sample.label) if sample.label is not None and 0 <= int(sample.label) < 2 else 0
        loss = F.cross_entropy(model(x), torch.tensor([label], device=dev))
        (grad,) = torch.autograd.grad(loss, x)
    finally:
        for m, training, track in bn_modes:
            m.running_mean, m.running_var = m._saved
            del m._saved
            m.track_running_stats = track
            m.train(training)
    allowed = torch.from_numpy(fg_np)[None, None].to(dev) if fg_np is not None else None
    mask = topk_mask(grad.abs(), mask_ratio, allowed)
    return mask[0, 0].cpu().numpy().astype(bool)
