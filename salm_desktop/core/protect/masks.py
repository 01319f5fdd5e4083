"""Masks: the body (foreground) region and the SALM top-k saliency mask."""

from __future__ import annotations

import numpy as np
import torch

from salm_desktop.core.model import IntensityMap


# CT: everything denser than this is patient (or the table, removed by keeping the largest parts);
# air (-1000 HU), the air inside the scan circle and the padding outside it (-2000..-1024) are not.
CT_BODY_THRESHOLD_HU = -500.0


def body_mask(native: np.ndarray, intensity: IntensityMap) -> np.ndarray:
    """The patient's body in one sample (2D or 3D, native values): True inside the patient.

    The one foreground mask of the project: the engine restricts the perturbation to it
    (``ProtectSettings.foreground``) and the fidelity report splits its "in body" / "background"
    figures by it. CT (HU): above ``CT_BODY_THRESHOLD_HU``; other data: above half the Otsu level of
    the normalized image (Otsu alone separates bright from dark tissue as often as body from air).
    Then morphology: an opening removes noise and thin lines (table edges), only the large connected
    parts are kept (the largest and any at least a quarter of its size: two legs, two arms), holes
    are filled slice by slice (lungs, bowel gas, dark vessels stay inside the body) and a closing
    smooths the outline. A (nearly) constant image or a tiny region gives the whole sample.
    """
    from scipy import ndimage

    values = np.asarray(native, dtype=np.float32)
    if values.size == 0 or float(np.nanmax(values) - np.nanmin(values)) <= 1e-6 * max(1.0, intensity.width):
        return np.ones(values.shape, dtype=bool)
    if intensity.unit == "HU":
        fg = values > CT_BODY_THRESHOLD_HU
    else:
        from skimage.filters import threshold_otsu

        x = np.clip(intensity.normalize(values), 0.0, 1.0)
        try:
            t = float(threshold_otsu(x))
        except ValueError:
            return np.ones(values.shape, dtype=bool)
        fg = x > max(0.02, 0.5 * t)
    structure = ndimage.generate_binary_structure(values.ndim, 1)
    radius = 2 if min(values.shape[:2]) >= 64 else 1
    fg = ndimage.binary_opening(fg, structure, iterations=radius)
    labels, n = ndimage.label(fg)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= 0.25 * sizes.max()) + 1
        fg = np.isin(labels, keep)
    fg = ndimage.binary_closing(fg, structure, iterations=radius)
    if fg.ndim == 2:
        fg = ndimage.binary_fill_holes(fg)
    else:  # holes per in-plane slice: a 3D fill misses a lung open at the volume's end
        fg = np.stack([ndimage.binary_fill_holes(fg[..., k]) for k in range(fg.shape[-1])], axis=-1)
    if fg.mean() < 0.01:
        return np.ones(values.shape, dtype=bool)
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
