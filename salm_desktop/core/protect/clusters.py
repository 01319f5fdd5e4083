"""Label-agnostic mode: pseudo-labels from k-means on intensity features.

The Unlearnable-Clusters idea: a thief may train on labels the protector never saw, so the noise
is built against cluster structure instead of given labels. Features are the sample downsampled
to 8x8 (4x4x4 in 3D) plus intensity mean/std/percentiles, standardized; k-means++ seeding and Lloyd
iterations in torch with a seeded generator (deterministic).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def intensity_features(x_norm: np.ndarray) -> np.ndarray:
    """Features of one normalized sample (2D or 3D)."""
    t = torch.from_numpy(np.clip(np.asarray(x_norm, dtype=np.float32), 0, 1))[None, None]
    if t.ndim == 4:
        pooled = F.adaptive_avg_pool2d(t, 8)
    else:
        pooled = F.adaptive_avg_pool3d(t, 4)
    flat = t.flatten()
    q = torch.quantile(flat, torch.tensor([0.1, 0.5, 0.9])) if flat.numel() <= 16_000_000 else torch.zeros(3)
    stats = torch.cat([flat.mean()[None], flat.std()[None], q])
    return torch.cat([pooled.flatten(), stats]).numpy()


def kmeans(features: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    n = x.shape[0]
    if n < k:
        raise ValueError(f"{n} samples cannot form {k} clusters")
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    g = torch.Generator().manual_seed(int(seed))
    centers = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    for _ in range(1, k):  # k-means++
        d2 = torch.cdist(x, torch.stack(centers)).min(1).values ** 2
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n)
        centers.append(x[torch.multinomial(probs, 1, generator=g)].squeeze(0))
    c = torch.stack(centers)
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        new = torch.cdist(x, c).argmin(1)
        for j in range(k):
            members = x[new == j]
            if len(members):
                c[j] = members.mean(0)
            else:  # re-seed an empty cluster at the farthest point
                c[j] = x[torch.cdist(x, c).min(1).values.argmax()]
        if torch.equal(new, assign):
            break
        assign = new
    # Stable numbering: clusters ordered by size (largest first), ties by first member.
    sizes = torch.bincount(assign, minlength=k)
    order = sorted(range(k), key=lambda j: (-int(sizes[j]), int((assign == j).nonzero()[0]) if sizes[j] else n))
    remap = torch.empty(k, dtype=torch.long)
    for new_j, old_j in enumerate(order):
        remap[old_j] = new_j
    return remap[assign].numpy().astype(np.int64)
