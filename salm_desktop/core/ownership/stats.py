"""Exact tests for the ownership certificate (no normal approximation anywhere).

Under the null hypothesis (the suspect model never saw the keyed release) the model's answers are
independent of the secret key labels, which were drawn uniformly at random from a fresh private seed.
Each key is then matched with probability exactly ``k / C`` (top-k answers, C classes), independently
of the other keys, so the number of hits is Binomial(K, k/C) whatever the model is.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def binomial_tail(hits: int, trials: int, p0: float | Fraction) -> float:
    """P(Binomial(trials, p0) >= hits), summed exactly in rational arithmetic, then rounded once.

    ``p0`` is best passed as a Fraction (``Fraction(k, C)``); a float is converted exactly.
    """
    hits, trials = int(hits), int(trials)
    if trials < 0 or not 0 <= hits <= trials + 1:
        raise ValueError(f"need 0 <= hits <= trials, got hits={hits}, trials={trials}")
    p = Fraction(p0)
    if not 0 <= p <= 1:
        raise ValueError(f"p0 must be in [0, 1], got {p0}")
    if hits <= 0:
        return 1.0
    q = 1 - p
    total = sum((math.comb(trials, j) * p**j * q ** (trials - j) for j in range(hits, trials + 1)), Fraction(0))
    return float(total)


def min_hits(trials: int, p0: float | Fraction, alpha: float) -> int | None:
    """The fewest hits with p-value <= alpha (None when even all hits are not enough)."""
    for h in range(0, trials + 1):
        if binomial_tail(h, trials, p0) <= alpha:
            return h
    return None


def centered_ranks(scores: np.ndarray) -> np.ndarray:
    """Each column of ``scores`` (K x C) replaced by the ranks of its K values (ties averaged) minus their mean.

    The score test's statistic on these ranks asks "do the keys labelled c push towards class c more than the
    other keys do?" -- a push shared by every key (a model that answers any texture with one class) and a few
    keys with a huge push no longer decide it. Ranks are a function of the answers alone, so the test stays exact.
    """
    scores = np.asarray(scores, dtype=np.float64)
    out = np.empty_like(scores)
    for c in range(scores.shape[1]):
        col = scores[:, c]
        order = np.argsort(col, kind="stable")
        ranks = np.empty(len(col))
        ranks[order] = np.arange(1, len(col) + 1, dtype=np.float64)
        for v in np.unique(col):  # ties: the mean of their ranks
            tie = col == v
            if tie.sum() > 1:
                ranks[tie] = ranks[tie].mean()
        out[:, c] = ranks - ranks.mean()
    return out


def score_test(scores: np.ndarray, labels: np.ndarray, *, draws: int = 19_999, seed: int = 0) -> float:
    """Randomization p-value of ``T = sum_j scores[j, labels[j]]`` (``scores``: K x C).

    Under the null hypothesis each secret label is uniform on the C classes and independent of the
    scores, so redrawing the labels uniformly gives T's exact null distribution given the scores. With
    ``draws`` Monte Carlo redraws, ``(1 + #{T* >= T}) / (1 + draws)`` is a valid p-value
    (P(p <= a) <= a exactly, for every a; the smallest attainable value is 1 / (1 + draws)).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError("scores must be K x C with one row per key")
    k, c = scores.shape
    observed = float(scores[np.arange(k), labels].sum())
    rng = np.random.default_rng(seed)
    exceed = 0
    chunk = 4096
    done = 0
    while done < draws:
        n = min(chunk, draws - done)
        fake = rng.integers(0, c, size=(n, k))
        t = np.take_along_axis(np.broadcast_to(scores, (n, k, c)), fake[..., None], axis=2)[..., 0].sum(1)
        exceed += int(np.count_nonzero(t >= observed - 1e-12))
        done += n
    return (1 + exceed) / (1 + draws)
