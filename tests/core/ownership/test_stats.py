"""The certificate's tests are exact: the binomial tail against a brute-force sum and scipy, the
score test's validity."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from salm_desktop.core.ownership.stats import binomial_tail, min_hits, score_test


@pytest.mark.parametrize("trials,p0", [(10, Fraction(1, 2)), (11, Fraction(1, 3)), (7, Fraction(3, 10))])
def test_binomial_tail_equals_the_brute_force_sum_over_all_outcomes(trials, p0):
    # enumerate every outcome sequence of length `trials` over C classes with k of them counted as hits
    c = p0.denominator
    k = p0.numerator
    counts = [0] * (trials + 1)
    for outcome in itertools.product(range(c), repeat=trials) if c ** trials <= 2e6 else ():
        counts[sum(o < k for o in outcome)] += 1
    if sum(counts) == 0:  # too many sequences: sum the binomial pmf term by term instead
        counts = [math.comb(trials, j) * k**j * (c - k) ** (trials - j) for j in range(trials + 1)]
    total = c**trials
    for hits in range(trials + 1):
        exact = Fraction(sum(counts[hits:]), total)
        assert binomial_tail(hits, trials, p0) == float(exact)


def test_binomial_tail_agrees_with_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for trials in (1, 10, 32, 100):
        for hits in range(trials + 1):
            for p0 in (0.5, 0.1, 0.25):
                ref = stats.binomtest(hits, trials, p0, alternative="greater").pvalue
                assert binomial_tail(hits, trials, Fraction(p0).limit_denominator(100)) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_minimum_hits_for_binary_labels_match_the_research_table():
    # /work/shared/research/ownership-verification.md, section 1.3
    assert [min_hits(k, Fraction(1, 2), 0.01) for k in (10, 20, 30, 50, 100)] == [10, 16, 22, 34, 63]
    assert min_hits(10, Fraction(1, 2), 0.0009) is None  # 2^-10 = 9.8e-4 is the smallest p with 10 binary keys
    assert binomial_tail(0, 32, Fraction(1, 2)) == 1.0
    assert binomial_tail(32, 32, Fraction(1, 2)) == 2.0**-32


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        binomial_tail(5, 3, 0.5)
    with pytest.raises(ValueError):
        binomial_tail(1, 3, 1.5)


def test_score_test_is_valid_under_the_null_and_powerful_under_the_alternative():
    rng = np.random.default_rng(1)
    # null: labels independent of the scores -> P(p <= a) <= a (checked at a = 0.1 over 200 draws, generous bound)
    ps = [score_test(rng.normal(size=(16, 2)), rng.integers(0, 2, 16), draws=199, seed=i) for i in range(200)]
    assert np.mean(np.asarray(ps) <= 0.1) < 0.18
    assert min(ps) >= 1 / 200
    # alternative: the score of the secret label is higher
    labels = rng.integers(0, 2, 32)
    scores = rng.normal(size=(32, 2))
    scores[np.arange(32), labels] += 1.5
    assert score_test(scores, labels, draws=1999) <= 0.001


def test_centered_ranks_keep_the_score_test_exact_and_ignore_a_push_shared_by_every_key():
    from salm_desktop.core.ownership.stats import centered_ranks

    r = centered_ranks(np.array([[3.0, -3.0], [1.0, -1.0], [1.0, -1.0], [-5.0, 5.0]]))
    assert np.allclose(r[:, 0], [1.5, 0.0, 0.0, -1.5]) and np.allclose(r[:, 1], -r[:, 0])  # ties share their rank
    rng = np.random.default_rng(3)
    # null: answers independent of the labels, with a large push towards class 1 on every key
    null = []
    for i in range(200):
        d = rng.normal(size=16) + 20.0
        null.append(score_test(centered_ranks(np.stack([-d, d], 1)), rng.integers(0, 2, 16), draws=199, seed=i))
    for alpha in (0.05, 0.2):
        assert np.mean(np.asarray(null) <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / 200)
    # alternative: the keys labelled 1 push a little more towards class 1, on top of the shared push
    labels = rng.integers(0, 2, 16)
    d = 20.0 + rng.normal(size=16) * 0.3 + 1.0 * labels  # the shared push (20) dwarfs the signal (1)
    ranked = score_test(centered_ranks(np.stack([-d, d], 1)), labels, draws=1999)
    raw = score_test(np.stack([-d, d], 1), labels, draws=1999)
    assert ranked <= 0.01 < raw
