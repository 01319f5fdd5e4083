"""salm-tex (salm_texture.py): a class-wise periodic texture that a crop or a flip does not remove,
kept inside the SALM class mask, at most epsilon per pixel, PSNR above the 35 dB floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salm_desktop.core.evaluate import medmnist_series
from salm_desktop.core.protect import ProtectSettings, protect_series
from salm_desktop.core.protect.salm_texture import class_frequencies, class_textures

torch.set_num_threads(1)


def _spectrum(t: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.fft2(t))


def test_texture_frequency_survives_shift_and_flip():
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 2, 2])
    tex = class_textures((6, 28, 28), y, rng)
    assert set(np.unique(tex)) == {-1.0, 1.0}
    for t in tex:
        spec = _spectrum(t)
        # a crop moves the pattern (circular shift here: the pattern's periods divide 28), a flip mirrors it;
        # neither changes which frequencies it has (a flip mirrors the spectrum, which is symmetric for a real pattern)
        for moved in (np.roll(t, (3, -2), axis=(0, 1)), t[:, ::-1], np.roll(t[:, ::-1], 1, axis=1)):
            assert np.allclose(_spectrum(moved), spec, atol=1e-6)
    # images of one class share the frequency, other classes do not (what the thief is meant to learn)
    peak = [tuple(np.argwhere(_spectrum(t) > 0.25 * _spectrum(t).max())[0]) for t in tex]
    assert peak[0] == peak[1] and peak[2] == peak[3] and peak[4] == peak[5]
    assert len({peak[0], peak[2], peak[4]}) == 3
    # the phase is drawn per image, so the absolute pattern is not a class code by itself
    assert not np.array_equal(class_textures((2, 28, 28), np.array([0, 0]), np.random.default_rng(1))[0],
                              class_textures((2, 28, 28), np.array([0, 0]), np.random.default_rng(2))[0])


def test_frequency_override_used_for_probes():
    # the period-4 probe (docs/benchmarks.md): rows period 4 for class 0, columns period 4 for class 1
    y = np.array([0, 1])
    tex = class_textures((2, 28, 28), y, np.random.default_rng(0), frequencies=[[0.25, 0], [0, 0.25]])
    assert set(np.unique(tex)) == {-1.0, 1.0}
    assert np.array_equal(tex[0], np.roll(tex[0], 4, axis=0)) and not np.array_equal(tex[0], np.roll(tex[0], 2, axis=0))
    assert np.array_equal(tex[0], np.roll(tex[0], 1, axis=1))  # constant along the columns
    assert np.array_equal(tex[1], np.roll(tex[1], 4, axis=1)) and not np.array_equal(tex[1], np.roll(tex[1], 2, axis=1))
    default = class_textures((2, 28, 28), y, np.random.default_rng(0))
    assert np.array_equal(default[0], np.roll(default[0], 2, axis=0))  # the default period is 2


def test_too_many_classes_is_refused():
    with pytest.raises(ValueError, match="at most"):
        class_frequencies(50)


@pytest.fixture(scope="module")
def series(medmnist_dir):
    return medmnist_series(medmnist_dir / "breastmnist.npz", "train", n=64)


def _run(series, seed=0):
    result = protect_series([series], ProtectSettings(method="salm-tex", seed=seed, batch_size=32, device="cpu"))
    clean = np.stack([s.read() for s in series.samples]).astype(np.float64)
    prot = np.stack([result.protected(series.id, i) for i in range(len(series.samples))]).astype(np.float64)
    return clean, prot


def test_salm_tex_budget_mask_and_determinism(series):
    clean, prot = _run(series)
    diff = prot - clean
    assert np.abs(diff).max() <= 8 + 1e-6  # epsilon 8/255
    changed = (diff != 0).reshape(len(diff), -1)
    assert (changed.mean(1) <= round(0.3 * 784) / 784 + 1e-9).all()  # the mask ratio (auto: 0.3 for the texture)
    assert changed.mean() > 0.25  # and it uses the mask (only clipping at 0 / 255 leaves pixels unchanged)
    labels = np.array([s.label for s in series.samples])
    for c in np.unique(labels):  # one mask per class: every changed pixel lies in the class's mask
        union = changed[labels == c].any(0)
        assert union.sum() <= round(0.3 * 784)
    mse = (diff ** 2).reshape(len(diff), -1).mean(1)
    assert float(np.mean(10 * np.log10(255.0 ** 2 / mse))) >= 35.0
    _, prot2 = _run(series)
    assert np.array_equal(prot, prot2), "not deterministic for a seed"
    _, prot3 = _run(series, seed=1)
    assert not np.array_equal(prot, prot3)


def _breast32(medmnist_dir):
    """32 BreastMNIST training images in [0, 1] and their labels."""
    ser = medmnist_series(medmnist_dir / "breastmnist.npz", "train", n=32)
    return (np.stack([s.read() for s in ser.samples]).astype(np.float32) / 255.0,
            np.array([s.label for s in ser.samples]))


def test_refinement_stays_in_budget_and_mask(medmnist_dir):
    from salm_desktop.core.protect.salm_texture import texture_shortcut

    x, y = _breast32(medmnist_dir)
    settings = ProtectSettings(method="salm-tex", batch_size=16, max_rounds=2, device="cpu")
    plain = texture_shortcut(x, y, settings)
    refined = texture_shortcut(x, y, settings, refine_steps=2)
    assert np.abs(refined).max() <= 8 / 255 + 1e-6
    assert not ((refined != 0) & (plain == 0) & (x > 0) & (x < 1)).any(), "refinement left the mask"
    assert not np.array_equal(refined, plain)


def test_targeted_part_on_the_next_pixels_keeps_the_texture_and_the_budget(medmnist_dir):
    """The probe option tap_ratio (docs/robustness.md, the filtering thieves): the texture stays as it
    was in its mask; the targeted part changes only the next tap_ratio of pixels by class saliency."""
    from salm_desktop.core.protect.salm_texture import texture_shortcut

    x, y = _breast32(medmnist_dir)
    settings = ProtectSettings(method="salm-tex", batch_size=16, mask_ratio=0.2, device="cpu")
    plain = texture_shortcut(x, y, settings)
    both = texture_shortcut(x, y, settings, tap_ratio=0.15)
    assert np.abs(both).max() <= 8 / 255 + 1e-6
    in_mask = plain != 0
    assert np.array_equal(both[in_mask], plain[in_mask])  # the texture untouched
    extra = (both != 0) & ~in_mask
    assert extra.any()
    assert ((both != 0).reshape(len(x), -1).mean(1) <= round(0.35 * 784) / 784 + 1e-9).all()


def test_mask_placement_least_salient_uses_the_other_pixels(series):
    """Probe option (issue 13): the texture on each class's least salient pixels instead of its most
    salient ones: the same share of pixels, none of them in the salient mask (the two are disjoint)."""
    from salm_desktop.core.protect.salm_texture import texture_shortcut

    x = np.stack([s.read() for s in series.samples]).astype(np.float32) / 255.0
    y = np.array([s.label for s in series.samples])
    settings = ProtectSettings(method="salm-tex", mask_ratio=0.3, batch_size=32, device="cpu")
    salient = texture_shortcut(x, y, settings) != 0
    least = texture_shortcut(x, y, settings, mask_placement="least_salient") != 0
    assert least.mean() > 0.25 and (least.reshape(len(y), -1).mean(1) <= round(0.3 * 784) / 784 + 1e-9).all()
    assert not (salient & least).any()
    with pytest.raises(ValueError, match="mask placement"):
        texture_shortcut(x, y, settings, mask_placement="edges")


def test_mask_scopes_class_sample_and_blend(series):
    """Probe option (issue 12): class masks are shared by the images of a class, per-image and blended masks are
    not; every scope keeps the budget's share of pixels; an unknown scope is refused."""
    from salm_desktop.core.protect.salm_texture import texture_shortcut

    x = np.stack([s.read() for s in series.samples]).astype(np.float32) / 255.0
    y = np.array([s.label for s in series.samples])
    settings = ProtectSettings(method="salm-tex", mask_ratio=0.3, batch_size=32, device="cpu")
    limit = round(0.3 * 784) / 784 + 1e-9
    masks = {scope: texture_shortcut(x, y, settings, mask_scope=scope) != 0 for scope in ("class", "sample", "blend")}
    for scope, mask in masks.items():
        assert (mask.reshape(len(y), -1).mean(1) <= limit).all() and mask.mean() > 0.25, scope
    members = np.flatnonzero(y == y[0])
    # the class mask is one mask per class (up to pixels the [0, 1] clip zeroes); the others differ per image
    shared = lambda m: np.mean([(m[i] == m[members[0]]).mean() for i in members[1:]])  # noqa: E731
    assert shared(masks["class"]) > 0.95
    assert shared(masks["sample"]) < shared(masks["blend"]) < shared(masks["class"])
    with pytest.raises(ValueError, match="mask scope"):
        texture_shortcut(x, y, settings, mask_scope="global")


def test_typicality_probe_gives_typical_images_more_texture(series):
    """Probe option (issue 12): each image's share of textured pixels grows with its within-class rank by the clean
    surrogate's margin, the mean share stays the mask ratio, and every mask is nested in the class's ranking."""
    from salm_desktop.core.protect.salm_texture import _typicality_mask

    torch.manual_seed(0)
    x = np.stack([s.read() for s in series.samples]).astype(np.float32) / 255.0
    y = np.array([s.label for s in series.samples])
    xt, yt = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))
    score = torch.rand(len(y), 28, 28)
    mask = _typicality_mask(model, xt, yt, score, 0.3, 0.5, 16)
    share = mask.reshape(len(y), -1).mean(1)
    assert abs(share.mean() - 0.3) < 0.01 and share.min() == pytest.approx(0.15, abs=0.01) and share.max() == pytest.approx(0.45, abs=0.01)
    with torch.no_grad():
        logits = model(xt)
    margin = (logits[torch.arange(len(y)), yt] - logits[torch.arange(len(y)), 1 - yt]).numpy()
    for c in (0, 1):
        members = np.flatnonzero(y == c)
        by_margin = members[np.argsort(margin[members])]
        assert np.all(np.diff(share[by_margin]) >= 0)  # the more typical, the more pixels
    # each image's pixels are its own score's top share (nested: the top-k of a larger share contains the smaller)
    i = int(np.argmax(share))
    top = np.argsort(-score[i].numpy().ravel(), kind="stable")[: int(mask[i].sum())]
    assert mask[i].ravel()[top].all()
