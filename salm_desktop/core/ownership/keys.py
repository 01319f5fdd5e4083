"""Secret ownership keys and the mark they leave in a release.

Design (docs/ownership.md explains and measures it): a key set is K secret patterns P_1..P_K and K
secret labels y_1..y_K drawn from a fresh private seed. The patterns are an orthonormal random
rotation of the K lowest 2D cosine (DCT-II) frequencies that are symmetric under a horizontal flip:
low frequencies survive JPEG, blur and median filtering, flip symmetry survives a thief's flip
augmentation, and orthogonality lets one summed mark carry every key's label without cross-talk.

Marking (clean label; no label is changed): every training image of class c gets
``amplitude * w_c`` added, with ``w_c = sum_j (1[y_j = c] - 1/C) P_j`` scaled to a peak of 1, and the
total change from the original is clipped to the protection's own epsilon. A model trained on the
release learns "P_j means class y_j" as a class-wise shortcut (the same kind of easy feature the
unlearnable protection itself relies on). Key j is asked as pairs of queries ``base +/- gain * P_j``
on a few of the data set's own images (bases): the answer that flips with the sign of the pattern is
the key's answer (a majority over the pairs), which cancels the model's bias towards one class.

The certificate does not depend on any of this working: the labels are fresh uniform draws, so a
model that never saw the release matches each with probability 1/C exactly (stats.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

DEFAULT_KEYS = 32
#: the mark's peak in the normalized scale, as a fraction of the protection's epsilon
DEFAULT_STRENGTH = 1.0
#: queries of key j: base_b +/- gain * P_j / max|P_j| for each base image b and each gain (normalized scale)
QUERY_GAINS = (0.05, 0.1)
#: how many of the data set's own images serve as query bases (chosen with the secret seed)
QUERY_BASES = 8
#: skip this many of the lowest flip-symmetric frequencies (natural images vary most there; see docs/ownership.md)
FREQUENCY_OFFSET = 60


def fresh_seed() -> int:
    """A fresh private seed from the operating system's CSPRNG (never derived from the protection seed)."""
    return secrets.randbits(63)


def flip_symmetric_frequencies(shape: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """The ``count`` lowest (vertical, horizontal) DCT frequencies with an even horizontal frequency.

    An even horizontal frequency makes the cosine symmetric under a left-right flip. DC is excluded.
    """
    h, w = shape
    cands = [(v, u) for v in range(h) for u in range(0, w, 2) if (v, u) != (0, 0)]
    cands.sort(key=lambda vu: (vu[0] ** 2 + vu[1] ** 2, vu[1], vu[0]))
    if len(cands) < count:
        raise ValueError(f"images of {h}x{w} pixels hold at most {len(cands)} keys, asked for {count}")
    return cands[:count]


def dct_basis(shape: tuple[int, int], freqs: list[tuple[int, int]]) -> np.ndarray:
    """Orthonormal DCT-II basis images (len(freqs) x H x W)."""
    h, w = shape
    y = (2 * np.arange(h) + 1)[:, None]
    x = (2 * np.arange(w) + 1)[None, :]
    out = np.empty((len(freqs), h, w), dtype=np.float64)
    for i, (v, u) in enumerate(freqs):
        b = np.cos(np.pi * v * y / (2 * h)) * np.cos(np.pi * u * x / (2 * w))
        out[i] = b / np.linalg.norm(b)
    return out


@dataclass
class KeySet:
    """The secret part of an ownership claim: ``patterns`` (K x H x W, orthonormal), ``labels`` (K)."""

    seed: int
    n_classes: int
    patterns: np.ndarray
    labels: np.ndarray
    strength: float = DEFAULT_STRENGTH

    @property
    def count(self) -> int:
        return int(len(self.labels))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.patterns.shape[1:])  # type: ignore[return-value]

    def class_marks(self) -> np.ndarray:
        """``C x H x W``: the mark of each class, peak |value| 1 over all classes."""
        onehot = np.eye(self.n_classes)[self.labels] - 1.0 / self.n_classes  # K x C
        marks = np.einsum("kc,khw->chw", onehot, self.patterns)
        return (marks / max(1e-12, float(np.abs(marks).max()))).astype(np.float32)

    def queries_normalized(self, bases: np.ndarray, gains: tuple[float, ...] = QUERY_GAINS) -> tuple[np.ndarray, list[dict]]:
        """Query images (normalized [0, 1]) and, per query, ``{"key", "base", "gain", "sign"}``.

        For every key, base image and gain: one query with ``+gain * P_j`` and one with ``-gain * P_j``.
        """
        peak = np.abs(self.patterns).max(axis=(1, 2), keepdims=True)
        unit = self.patterns / peak
        images, info = [], []
        for j in range(self.count):
            for b, base in enumerate(bases):
                for g in gains:
                    for sign in (1, -1):
                        images.append(np.clip(base + sign * g * unit[j], 0.0, 1.0))
                        info.append({"key": j, "base": b, "gain": float(g), "sign": sign})
        return np.asarray(images, dtype=np.float32), info


def make_keys(shape: tuple[int, ...], n_classes: int, count: int = DEFAULT_KEYS, seed: int | None = None,
              strength: float = DEFAULT_STRENGTH) -> KeySet:
    """Draw a key set for 2D images of ``shape`` with ``n_classes`` classes from ``seed`` (fresh if None)."""
    if len(shape) != 2:
        raise ValueError(f"ownership keys need 2D images; these samples have shape {tuple(shape)}")
    if n_classes < 2:
        raise ValueError("ownership keys need at least two classes in the labels")
    if count < 1:
        raise ValueError("the number of keys must be at least 1")
    if not 0 < strength <= 1:
        raise ValueError(f"the mark strength is a fraction of epsilon in (0, 1], got {strength}")
    seed = fresh_seed() if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    freqs = flip_symmetric_frequencies(tuple(shape), count + FREQUENCY_OFFSET)[FREQUENCY_OFFSET:]  # type: ignore[arg-type]
    basis = dct_basis(tuple(shape), freqs)  # type: ignore[arg-type]
    q, r = np.linalg.qr(rng.standard_normal((count, count)))
    rotation = q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix
    patterns = np.einsum("kj,jhw->khw", rotation, basis)
    labels = rng.integers(0, n_classes, size=count)
    return KeySet(seed, int(n_classes), patterns.astype(np.float32), labels.astype(np.int64), float(strength))


def mark_sample(native: np.ndarray, original: np.ndarray, label: int, keys: KeySet, epsilon: float,
                width: float, low: float, high: float, marks: np.ndarray | None = None) -> np.ndarray:
    """Add class ``label``'s mark to one protected sample (native values), inside the budget.

    The total change from ``original`` stays within ``epsilon * width`` and the values inside the
    intensity window [low, high] where the original was inside it.
    """
    marks = keys.class_marks() if marks is None else marks  # callers marking many samples pass them once
    mark = marks[int(label)] * np.float32(keys.strength * epsilon * width)
    budget = np.float32(epsilon * width)
    change = np.clip(native - original + mark, -budget, budget)
    out = original + change
    lo = np.minimum(original, np.float32(low))
    hi = np.maximum(original, np.float32(high))
    return np.clip(out, lo, hi).astype(np.float32)
