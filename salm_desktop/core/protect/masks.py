"""Masks: the foreground (body) region and the SALM top-k saliency mask."""

from __future__ import annotations

import numpy as np
import torch


def foreground_mask(x_norm: np.ndarray, min_level: float = 0.02) -> np.ndarray:
    """Body/foreground region of one sample (2D or 3D), from its normalized intensities.

    Otsu threshold (scikit-image), at least ``min_level``, then a morphological closing and hole
    filling so that dark structures inside the body stay included. Falls back to the whole sample
    when the image is (nearly) constant or the region is tiny.
    """
    from skimage.filters import threshold_otsu
    from skimage.morphology import ball, closing, disk, remove_small_holes

    x = np.clip(np.asarray(x_norm, dtype=np.float32), 0.0, 1.0)
    if float(x.max() - x.min()) < 1e-6:
        return np.ones(x.shape, dtype=bool)
    try:
        t = float(threshold_otsu(x))
    except ValueError:
        return np.ones(x.shape, dtype=bool)
    # Half the Otsu level: Otsu separates bright tissue from dark tissue as often as body from air.
    fg = x > max(min_level, 0.5 * t)
    footprint = disk(2) if x.ndim == 2 else ball(1)
    fg = closing(fg, footprint).astype(bool)
    fg = remove_small_holes(fg, max_size=max(16, fg.size // 50))
    if fg.mean() < 0.01:
        return np.ones(x.shape, dtype=bool)
    return fg


def topk_mask(score: torch.Tensor, ratio: float, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample (first axis), True at the top ``ratio`` fraction of elements by ``score``.

    ``allowed`` (bool, same shape) restricts the choice; at most ``ratio * numel`` elements are
    chosen per sample even when the allowed region is larger, fewer when it is smaller.
    """
    n = score.shape[0]
    flat = score.reshape(n, -1).float()
    numel = flat.shape[1]
    k = max(1, int(round(ratio * numel)))
    if k >= numel and allowed is None:
        return torch.ones_like(score, dtype=torch.bool)
    if allowed is not None:
        allowed_flat = allowed.reshape(n, -1)
        flat = torch.where(allowed_flat, flat, torch.full_like(flat, -1.0))
    idx = torch.topk(flat, min(k, numel), dim=1, sorted=False).indices  # the set, not its order: 2x faster
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    if allowed is not None:
        mask &= allowed_flat
    return mask.reshape(score.shape)
