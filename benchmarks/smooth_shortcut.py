"""Probe (issue 12): a class-wise *smooth* additive pattern along the direction the images vary least.

Why: under crop + flip a periodic texture has no class mean (its phase is random), so a thief can learn it
only through a non-linear energy detector, after the anatomy's first-order signal (the class-mean
difference, what gradient descent follows first). A smooth pattern keeps its class mean under a shift of a
few pixels, and a horizontally symmetric one under the flip. Among those (DCT components with row index
< k and even column index < k), the one along which the clean images of a class vary least is the most
separable for its budget. Binary labels: class 1 gets +p, class 0 -p; more classes: class c gets the c-th
least-varying pattern. Model-free; dense (not a default candidate as it stands: the default must be sparse).

    from benchmarks.smooth_shortcut import smooth_class_pattern   # used by efficacy_probe.py ("smooth_share")
"""

from __future__ import annotations

import numpy as np
from scipy.fft import idctn

PSNR_FLOOR_DB = 35.0


def smooth_basis(h: int, w: int, k: int) -> np.ndarray:
    """(h*w) x m orthonormal DCT patterns, row index < k, even column index < k (a horizontal flip keeps them)."""
    cols = []
    for i in range(k):
        for j in range(0, k, 2):
            c = np.zeros((h, w))
            c[i, j] = 1.0
            cols.append(idctn(c, norm="ortho").ravel())
    return np.array(cols).T


def least_varying_patterns(x: np.ndarray, y: np.ndarray, k: int, n: int) -> np.ndarray:
    """The ``n`` unit-norm smooth patterns (n x H x W) along which the clean images vary least within their class."""
    N, h, w = x.shape
    flat = x.reshape(N, -1).astype(np.float64)
    resid = np.concatenate([flat[y == c] - flat[y == c].mean(0) for c in np.unique(y)])
    basis = smooth_basis(h, w, k)
    proj = resid @ basis
    evals, evecs = np.linalg.eigh(proj.T @ proj / len(proj))
    patterns = (basis @ evecs[:, :n]).T
    return (patterns / np.linalg.norm(patterns, axis=1, keepdims=True)).reshape(n, h, w)


def smooth_class_pattern(x: np.ndarray, y: np.ndarray, epsilon: float, share: float = 1.0, k: int = 4) -> np.ndarray:
    """N x H x W noise: each image its class's pattern, scaled to ``share`` of the squared error PSNR_FLOOR_DB
    allows, clipped to +-epsilon (the window clip is the caller's)."""
    n_classes = int(y.max()) + 1
    pats = least_varying_patterns(x, y, k, 1 if n_classes == 2 else n_classes)
    codes = np.stack([-pats[0], pats[0]]) if n_classes == 2 else pats
    norm = np.sqrt(share * x.shape[1] * x.shape[2] * 10 ** (-PSNR_FLOOR_DB / 10))
    return np.clip(codes[y] * norm, -epsilon, epsilon).astype(np.float32)
