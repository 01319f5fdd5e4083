"""The smooth class-pattern probe (benchmarks/smooth_shortcut.py, issue 12) makes what its docstring says: one
flip-symmetric smooth pattern per class, opposite signs for two classes, inside epsilon, at the PSNR floor or above."""

from __future__ import annotations

import numpy as np


def test_pattern_is_smooth_flip_symmetric_and_inside_the_budget(medmnist_dir, load_benchmark):
    probe = load_benchmark("smooth_shortcut.py")
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        x, y = z["train_images"][:200].astype(np.float32) / 255, z["train_labels"][:200, 0]
    eps = 8 / 255
    d = probe.smooth_class_pattern(x, y, eps)
    assert d.shape == x.shape and np.abs(d).max() <= eps + 1e-7
    assert np.allclose(d, d[:, :, ::-1])  # a horizontal flip keeps it
    first = {c: d[np.flatnonzero(y == c)[0]] for c in (0, 1)}
    assert np.allclose(first[0], -first[1]) and all(np.allclose(d[i], first[y[i]]) for i in range(len(y)))
    psnr = 10 * np.log10(1 / (d ** 2).mean(axis=(1, 2)))
    assert (psnr >= probe.PSNR_FLOOR_DB - 1e-6).all()
    # smooth: after the clip to epsilon still almost all of its energy in the DCT components it was built from
    from scipy.fft import dctn

    coef = dctn(first[1], norm="ortho") ** 2
    assert coef[:4, :4].sum() / coef.sum() > 0.9
    # along the chosen pattern the clean images vary less than along the class-mean difference (why it was chosen)
    pattern = probe.least_varying_patterns(x, y, 4, 1)[0].ravel()
    resid = np.concatenate([x[y == c].reshape(-1, 784) - x[y == c].reshape(-1, 784).mean(0) for c in (0, 1)])
    diff = x[y == 1].reshape(-1, 784).mean(0) - x[y == 0].reshape(-1, 784).mean(0)
    assert (resid @ pattern).std() < (resid @ (diff / np.linalg.norm(diff))).std()
