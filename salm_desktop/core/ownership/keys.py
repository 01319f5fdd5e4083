"""Secret ownership keys and the mark they leave in a release.

Design (docs/ownership.md explains and measures it; version 2, issue 14): key j is a *texture*, a
saturated separable grating ``sign(cos(2 pi fy_j y + a) * cos(2 pi fx_j x + b))`` at its own pair of
frequencies (fy_j, fx_j), drawn with a fresh phase (a, b) every time it is used. A shift (a thief's
random crop) or a mirror (its flip) of such a grating only changes the phase, so what identifies the
key, its frequency pair, survives the thief's augmentation; keys have disjoint power spectra, so a
model that keys on "energy at frequency f" (what a convolution learns first) can tell them apart.
This is the texture that the ``salm-tex`` protection showed augmenting thieves learn (issue 12).

Marking (clean label; no label is changed): every protected training image of class c gets the sign of
the sum of DEFAULT_PER_IMAGE gratings, drawn per image among the keys whose secret label is c (fresh
phases per image), at the protection's own epsilon, on every pixel where that sign is non-zero; it
replaces the protection's change there (the protection's change stays where the mark is zero). With
only some of its class's keys in each image, no single key identifies the class, so a thief that
learns the mark has to learn every key (docs/ownership.md has the probes that chose this).

Queries: key j is asked as pairs ``(base, base + gain * grating_j)`` on a few of the data set's own
images (bases) with fresh phases: the answer that the grating pushes the model to is the key's answer.

The certificate does not depend on any of this working: the frequencies, the phases and the bases
are drawn first and the labels last, from their own stream, so a model that never saw the release
matches each label with probability 1/C exactly (stats.py), whatever it learned.
"""

from __future__ import annotations

import math
import secrets
import zlib
from dataclasses import dataclass

import numpy as np

DESIGN = "texture-v2"
DEFAULT_KEYS = 16
#: the mark's value as a fraction of epsilon (1: saturated, like the protection's own noise)
DEFAULT_STRENGTH = 1.0
#: how many of its class's keys each training image carries (drawn per image): with fewer than all of them no
#: single key is enough to recognise the class, so a thief has to learn every key (docs/ownership.md)
DEFAULT_PER_IMAGE = 2
#: frequency levels (cycles per pixel); a key is a pair (fy, fx) of them other than (0, 0), at least 2 cycles per
#: 28 pixels apart. High frequencies: natural images have little energy there and a thief learns them first
#: (docs/ownership.md: the lower levels 0.125 ... 0.42 were learned less, and not at all by the SGD ResNet-18).
FREQUENCY_LEVELS = (0.0, 0.2, 0.3, 0.42, 0.5)
#: the salm-tex protection's class textures (core/protect/salm_texture.py): never a key, so the two never mix
EXCLUDED_FREQUENCIES = ((0.5, 0.0), (0.0, 0.5), (0.5, 0.5))
#: queries of key j: clip(base_b + gain * grating_j) for each base image b and each gain (normalized scale)
QUERY_GAINS = (0.06, 0.12)
#: how many of the data set's own images serve as query bases (chosen with the secret seed)
QUERY_BASES = 16


def fresh_seed() -> int:
    """A fresh private seed from the operating system's CSPRNG (never derived from the protection seed)."""
    return secrets.randbits(63)


def key_frequencies() -> list[tuple[float, float]]:
    """Every (fy, fx) pair of FREQUENCY_LEVELS except (0, 0) and the salm-tex textures, lowest first."""
    pairs = [(a, b) for a in FREQUENCY_LEVELS for b in FREQUENCY_LEVELS
             if (a, b) != (0.0, 0.0) and (a, b) not in EXCLUDED_FREQUENCIES]
    return sorted(pairs, key=lambda p: (p[0] ** 2 + p[1] ** 2, p))


def grating(shape: tuple[int, int], freq: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A +-1 texture at ``freq`` with a random phase per axis (multiples of pi/4 shifted by pi/8: never 0)."""
    h, w = shape
    fy, fx = freq
    py, px = math.pi / 8 + math.pi / 4 * rng.integers(0, 8, size=2)
    rows = np.cos(2 * math.pi * fy * np.arange(h) + py) if fy else np.ones(h)
    cols = np.cos(2 * math.pi * fx * np.arange(w) + px) if fx else np.ones(w)
    return np.sign(rows[:, None] * cols[None, :]).astype(np.float32)


@dataclass
class KeySet:
    """The secret part of an ownership claim: ``freqs`` (K x 2, cycles per pixel) and ``labels`` (K)."""

    seed: int
    n_classes: int
    shape: tuple[int, int]
    freqs: np.ndarray
    labels: np.ndarray
    strength: float = DEFAULT_STRENGTH
    per_image: int = DEFAULT_PER_IMAGE  # m > 0: m of the class's keys per image, drawn per image; 0: all of them
    #: where the mark goes: "replace" every pixel where it is non-zero (the protection's change stays elsewhere);
    #: "outside" only pixels the protection left alone; "mask" only pixels it changed (probes, docs/ownership.md)
    placement: str = "replace"

    @property
    def count(self) -> int:
        return int(len(self.labels))

    def class_mark(self, label: int, rng: np.random.Generator) -> np.ndarray:
        """H x W in {-1, 0, 1}: the sign of the sum of class ``label``'s key gratings, fresh phases from ``rng``."""
        total = np.zeros(self.shape, dtype=np.float32)
        mine = np.flatnonzero(self.labels == int(label))
        if self.per_image and len(mine) > self.per_image:
            mine = rng.choice(mine, size=self.per_image, replace=False)
        for j in mine:
            total += grating(self.shape, tuple(self.freqs[j]), rng)
        return np.sign(total)

    def queries_normalized(self, bases: np.ndarray, gains: tuple[float, ...] = QUERY_GAINS) -> tuple[np.ndarray, list[dict]]:
        """Query images (normalized [0, 1]) and, per query, ``{"key", "base", "gain", "sign"}``.

        For every key, base image and gain a pair: sign +1 is ``base + gain * grating`` (fresh phases),
        sign -1 is the base itself. The phases come from the seed's query stream, never from the labels.
        """
        rng = np.random.default_rng([self.seed, 3])
        images, info = [], []
        for j in range(self.count):
            for b, base in enumerate(bases):
                for g in gains:
                    tex = grating(self.shape, tuple(self.freqs[j]), rng)
                    images.append(np.clip(base + g * tex, 0.0, 1.0))
                    info.append({"key": j, "base": b, "gain": float(g), "sign": 1})
                    images.append(np.clip(base, 0.0, 1.0))
                    info.append({"key": j, "base": b, "gain": float(g), "sign": -1})
        return np.asarray(images, dtype=np.float32), info


def make_keys(shape: tuple[int, ...], n_classes: int, count: int = DEFAULT_KEYS, seed: int | None = None,
              strength: float = DEFAULT_STRENGTH) -> KeySet:
    """Draw a key set for 2D images of ``shape`` with ``n_classes`` classes from ``seed`` (fresh if None).

    The frequencies come from the seed's first stream, the labels from a stream of their own, drawn
    last: the labels are independent of everything else a suspect model can see (the exact null)."""
    if len(shape) != 2:
        raise ValueError(f"ownership keys need 2D images; these samples have shape {tuple(shape)}")
    if min(shape) < 8:
        raise ValueError(f"ownership keys need images of at least 8 x 8 pixels, got {tuple(shape)}")
    if n_classes < 2:
        raise ValueError("ownership keys need at least two classes in the labels")
    if count < 1:
        raise ValueError("the number of keys must be at least 1")
    cands = key_frequencies()
    if count > len(cands):
        raise ValueError(f"there are at most {len(cands)} key frequencies, asked for {count} keys")
    if not 0 < strength <= 1:
        raise ValueError(f"the mark strength is a fraction of epsilon in (0, 1], got {strength}")
    seed = fresh_seed() if seed is None else int(seed)
    pick = np.sort(np.random.default_rng([seed, 0]).choice(len(cands), size=count, replace=False))
    freqs = np.asarray([cands[i] for i in pick], dtype=np.float64)
    labels = np.random.default_rng([seed, 9]).integers(0, n_classes, size=count)  # last, on its own stream
    return KeySet(seed, int(n_classes), (int(shape[0]), int(shape[1])), freqs, labels.astype(np.int64), float(strength))


def sample_rng(keys: KeySet, series_id: str, index: int) -> np.random.Generator:
    """The phases of one training sample's mark (reproducible from the seed, different for every sample)."""
    return np.random.default_rng([keys.seed, 2, zlib.crc32(str(series_id).encode()), int(index)])


def mark_sample(native: np.ndarray, original: np.ndarray, label: int, keys: KeySet, epsilon: float,
                width: float, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """Put class ``label``'s mark on one protected sample (native values), inside the protection's mask and budget.

    Only the pixels the protection changed carry the mark (there it replaces the protection's noise, at
    ``strength * epsilon``); every other pixel keeps the original value. The total change from
    ``original`` stays within ``epsilon * width`` and inside the intensity window where the original was.
    """
    native = np.asarray(native, dtype=np.float32)
    original = np.asarray(original, dtype=np.float32)
    mark = keys.class_mark(label, rng)
    budget = np.float32(epsilon * width)
    touched = native != original
    region = {"replace": np.ones_like(touched), "mask": touched, "outside": ~touched}[keys.placement]
    where = region & (mark != 0)
    change = np.where(where, mark * np.float32(keys.strength) * budget, native - original)
    out = original + np.clip(change, -budget, budget)
    lo = np.minimum(original, np.float32(low))
    hi = np.maximum(original, np.float32(high))
    return np.clip(out, lo, hi).astype(np.float32)
