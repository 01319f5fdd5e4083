"""A series' own noise level and the structure of the added perturbation.

- ``highpass``: an image minus its 5x5 (in-plane) mean. The same residual measures the scan's noise
  and how much grainier the protected copy is.
- ``noise_sd``: a robust SD of that residual in homogeneous tissue (inside the body, where the
  smoothed image is flattest), corrected for the mean filter, so that the budget and the change can
  be stated relative to the scan's own noise ("the change is 0.35 noise SD").
- ``periodicity``: the autocorrelation of the perturbation (protected - original) along rows and
  columns; a local peak at lags 2..16 pixels more than ``PERIODIC_PEAK_LIMIT`` above both
  neighbouring lags is a regular pattern (e.g. the period-4 grid of a strided surrogate), which a
  reader notices and a filter removes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

HIGHPASS_SIZE = 5
PERIODIC_LAGS = (2, 16)
PERIODIC_PEAK_LIMIT = 0.03


def _inplane(size: int, ndim: int) -> tuple[int, ...]:
    return (size, size) + (1,) * (ndim - 2)


def highpass(native: np.ndarray) -> np.ndarray:
    """The image minus its 5x5 in-plane mean (float64)."""
    a = np.asarray(native, dtype=np.float64)
    return a - ndimage.uniform_filter(a, _inplane(HIGHPASS_SIZE, a.ndim), mode="reflect")


def homogeneous_mask(native: np.ndarray, region: np.ndarray | None = None, fraction: float = 0.3) -> np.ndarray:
    """The flattest ``fraction`` of ``region`` (default: everything): lowest gradient of the smoothed image."""
    a = np.asarray(native, dtype=np.float64)
    region = np.ones(a.shape, bool) if region is None else np.asarray(region, bool)
    smooth = ndimage.gaussian_filter(a, (2.0, 2.0) + (0.0,) * (a.ndim - 2))
    grad = np.zeros_like(smooth)
    for axis in range(2):
        grad += ndimage.sobel(smooth, axis=axis) ** 2
    # keep away from the region's edge, where the filters see the outside
    inner = ndimage.binary_erosion(region, iterations=HIGHPASS_SIZE) if region.any() else region
    if inner.sum() < 50:
        inner = region
    if not inner.any():
        return inner
    limit = np.quantile(grad[inner], fraction)
    return inner & (grad <= limit)


def noise_sd(native: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """Robust SD (1.4826 MAD) of the high-pass residual in homogeneous tissue, in native units.

    Corrected for the 5x5 mean (white noise of SD s leaves a residual of SD s * sqrt(24/25)).
    ``None`` when there are too few pixels to say.
    """
    a = np.asarray(native, dtype=np.float64)
    if a.ndim < 2 or min(a.shape[:2]) < 2 * HIGHPASS_SIZE:
        return None
    where = homogeneous_mask(a, region)
    if where.sum() < 50:
        return None
    r = highpass(a)[where]
    mad = float(np.median(np.abs(r - np.median(r))))
    k = HIGHPASS_SIZE**2
    return 1.4826 * mad / float(np.sqrt((k - 1) / k))


def autocorrelation(delta: np.ndarray, max_lag: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Normalized autocorrelation of a 2D pattern at lags 0..max_lag along rows (axis 1) and columns (axis 0)."""
    d = np.asarray(delta, dtype=np.float64)
    while d.ndim > 2:
        d = d[..., d.shape[-1] // 2]
    d = d - d.mean()
    energy = float((d * d).sum())
    max_lag = min(max_lag, min(d.shape) - 1)
    if energy <= 0 or max_lag < 1:
        zeros = np.zeros(max(1, max_lag + 1))
        return zeros, zeros
    along_cols = np.array([float((d[:, : d.shape[1] - k] * d[:, k:]).sum()) for k in range(max_lag + 1)]) / energy
    along_rows = np.array([float((d[: d.shape[0] - k] * d[k:]).sum()) for k in range(max_lag + 1)]) / energy
    return along_cols, along_rows


def periodicity(delta: np.ndarray, lags: tuple[int, int] = PERIODIC_LAGS,
                limit: float = PERIODIC_PEAK_LIMIT) -> dict[str, Any]:
    """Largest local autocorrelation peak of the perturbation at lags ``lags`` (inclusive), per axis.

    ``excess`` = ac[lag] - max(ac[lag - 1], ac[lag + 1]); the pattern fails when it exceeds ``limit``.
    """
    horizontal, vertical = autocorrelation(delta, lags[1] + 1)
    best = {"excess": 0.0, "lag": None, "axis": None}
    for axis, ac in (("horizontal", horizontal), ("vertical", vertical)):
        for lag in range(lags[0], min(lags[1], len(ac) - 2) + 1):
            excess = float(ac[lag] - max(ac[lag - 1], ac[lag + 1]))
            if excess > best["excess"]:
                best = {"excess": excess, "lag": lag, "axis": axis}
    return {**best, "limit": limit, "lags": list(lags), "periodic": bool(best["excess"] > limit)}
