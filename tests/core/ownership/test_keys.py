"""Texture keys and the release mark: one frequency per key, labels on their own stream, inside the budget and mask."""

from __future__ import annotations

import numpy as np
import pytest

from salm_desktop.core.ownership.keys import KeySet, fresh_seed, grating, key_frequencies, make_keys, mark_sample, sample_rng


def _peak(img: np.ndarray) -> tuple[int, int]:
    """The strongest non-DC frequency bin of ``img`` (folded to the positive quadrant)."""
    spec = np.abs(np.fft.fft2(img - img.mean()))
    v, u = np.unravel_index(int(spec.argmax()), spec.shape)
    h, w = img.shape
    return min(v, h - v), min(u, w - u)


def test_every_key_has_its_own_frequency_whatever_its_phase_shift_or_mirror():
    keys = make_keys((28, 28), 2, 16, seed=7)
    rng = np.random.default_rng(0)
    peaks = []
    for f in keys.freqs:
        seen = set()
        for _ in range(6):
            g = grating((28, 28), tuple(f), rng)
            assert set(np.unique(g)) <= {-1.0, 1.0}
            for view in (g, g[:, ::-1], np.roll(g, 2, axis=1)[2:-2, 2:-2]):  # phase, flip, a crop's shift
                seen.add(tuple(round(b / n * 28) for b, n in zip(_peak(view), view.shape)))
        assert len(seen) <= 2  # one frequency (a bin either side at most for the cropped view)
        peaks.append(min(seen))
    assert len(set(peaks)) == len(peaks)  # disjoint power spectra: no two keys share their frequency


def test_the_seed_decides_everything_and_fresh_seeds_differ():
    a, b = make_keys((28, 28), 2, 16, seed=11), make_keys((28, 28), 2, 16, seed=11)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.freqs, b.freqs)
    assert any(not np.array_equal(a.labels, make_keys((28, 28), 2, 16, seed=s).labels) for s in (12, 13, 14))
    assert fresh_seed() != fresh_seed()
    assert make_keys((28, 28), 2, 16).seed != make_keys((28, 28), 2, 16).seed


def test_queries_and_frequencies_do_not_depend_on_the_secret_labels():
    """What the suspect sees is drawn before and apart from the labels: swapping the labels changes no query."""
    keys = make_keys((28, 28), 2, 8, seed=21)
    other = KeySet(keys.seed, 2, keys.shape, keys.freqs, 1 - keys.labels)
    bases = np.full((2, 28, 28), 0.5, dtype=np.float32)
    qa, ia = keys.queries_normalized(bases)
    qb, ib = other.queries_normalized(bases)
    assert np.array_equal(qa, qb) and ia == ib
    assert len(qa) == 8 * 2 * 2 * 2
    plus, minus = qa[0::2], qa[1::2]
    assert np.array_equal(minus, np.repeat(np.repeat(bases, 2, axis=0)[None], 8, axis=0).reshape(-1, 28, 28))
    assert np.allclose(np.abs(plus - minus), np.asarray([i["gain"] for i in ia[0::2]])[:, None, None], atol=1e-6)


def test_the_null_distribution_is_binomial_for_a_model_that_never_saw_the_release():
    """A fixed 'model' (a function of the query image only) against 3,000 fresh key sets: hits per key ~ 1/2 and
    the label test's p-value is at most alpha with probability at most alpha (checked at 3 sigma)."""
    from fractions import Fraction

    from salm_desktop.core.ownership.stats import binomial_tail

    bases = np.stack([np.full((12, 12), 0.3, dtype=np.float32), np.linspace(0, 1, 144, dtype=np.float32).reshape(12, 12)])
    rejections = {0.05: 0, 0.2: 0}
    hits_total = keys_total = 0
    trials = 3000
    for s in range(trials):
        keys = make_keys((12, 12), 2, 6, seed=10_000 + s)
        q, info = keys.queries_normalized(bases, gains=(0.2,))
        answers = (q[:, :6, :].mean((1, 2)) > q[:, 6:, :].mean((1, 2)) + 0.01).astype(int)  # depends on the image only
        votes = np.zeros((6, 2))
        for a in range(0, len(info), 2):
            if answers[a] != answers[a + 1]:
                votes[info[a]["key"], answers[a]] += 1
        informative = (votes.max(1) > 0) & (votes[:, 0] != votes[:, 1])
        hits = int(np.count_nonzero(informative & (votes.argmax(1) == keys.labels)))
        n = int(informative.sum())
        hits_total, keys_total = hits_total + hits, keys_total + n
        p = binomial_tail(hits, n, Fraction(1, 2))
        for alpha in rejections:
            rejections[alpha] += p <= alpha
    assert keys_total > 1000
    assert abs(hits_total / keys_total - 0.5) < 3 * np.sqrt(0.25 / keys_total)
    for alpha, count in rejections.items():
        assert count / trials <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / trials)


@pytest.mark.parametrize("placement", ["replace", "mask", "outside"])
def test_the_mark_stays_inside_the_budget_and_where_its_placement_says(medmnist_dir, placement):
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        images, labels = z["train_images"][:20].astype(np.float32), z["train_labels"][:20, 0]
    keys = make_keys((28, 28), 2, 16, seed=5)
    keys.placement = placement
    rng = np.random.default_rng(0)
    mask = rng.random(images.shape) < 0.2
    protected = np.clip(images + mask * rng.choice([-8.0, 8.0], size=images.shape), 0, 255)  # a protection at the budget
    for i, (img, prot, lab) in enumerate(zip(images, protected, labels)):
        out = mark_sample(prot, img, lab, keys, 8 / 255, 255.0, 0.0, 255.0, sample_rng(keys, "s", i))
        mark = keys.class_mark(lab, sample_rng(keys, "s", i))  # the same phases again
        assert np.abs(out - img).max() <= 8.0 + 1e-4
        assert out.min() >= 0 and out.max() <= 255
        assert not np.array_equal(out, prot)
        assert np.array_equal(out[mark == 0], prot[mark == 0])  # where the mark is silent the protection stays
        inside = (np.abs(img - 127.5) < 119.5) & (mark != 0)  # pixels the intensity window does not clip
        if placement == "mask":
            assert np.array_equal(out[prot == img], img[prot == img])  # nothing outside the protection's mask
            sel = inside & (prot != img)
        elif placement == "outside":
            assert np.array_equal(out[prot != img], prot[prot != img])  # the protection's own pixels stay as they are
            sel = inside & (prot == img)
        else:
            sel = inside
        assert np.allclose(out[sel] - img[sel], 8.0 * mark[sel])  # the mark at the full budget


def test_each_class_mark_carries_the_frequencies_of_its_keys_only():
    keys = make_keys((28, 28), 2, 4, seed=2)
    keys.labels[:] = [0, 0, 1, 1]
    spec = {c: np.mean([np.abs(np.fft.fft2(keys.class_mark(c, np.random.default_rng(i)))) for i in range(40)], axis=0)
            for c in (0, 1)}

    def power(c, f):
        v, u = round(f[0] * 28), round(f[1] * 28)
        return spec[c][v, u]

    for j, f in enumerate(keys.freqs):
        own, other = int(keys.labels[j]), 1 - int(keys.labels[j])
        assert power(own, f) > 3 * power(other, f)


def test_unsupported_shapes_and_counts_are_refused():
    with pytest.raises(ValueError, match="2D"):
        make_keys((8, 8, 8), 2)
    with pytest.raises(ValueError, match="at most"):
        make_keys((28, 28), 2, len(key_frequencies()) + 1)
    with pytest.raises(ValueError, match="8 x 8"):
        make_keys((4, 4), 2)
    with pytest.raises(ValueError, match="two classes"):
        make_keys((28, 28), 1)
