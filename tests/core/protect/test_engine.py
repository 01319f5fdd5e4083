"""Engine invariants on real MedMNIST data: budget, mask, determinism, cancel, labels, shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from salm_desktop.core.evaluate import medmnist_series, series_from_arrays
from salm_desktop.core.model import IntensityMap, StoredFormat
from salm_desktop.core.progress import Cancelled, Progress
from salm_desktop.core.protect import ProtectSettings, preview_mask, protect_series
from salm_desktop.core.protect import store as store_mod

torch.set_num_threads(1)
FAST = dict(max_rounds=2, pgd_steps=5, train_steps=5, batch_size=32)
# The min-min tests below run "salm-v1": on these 2D 8-bit images "salm" is the class texture
# (tests/core/protect/test_salm_variants.py checks which variant runs where).


@pytest.fixture(scope="module")
def breast(medmnist_dir: Path):
    return medmnist_series(medmnist_dir / "breastmnist.npz", "train", n=64)


def _all(result, series):
    return np.stack([result.protected(series.id, i) for i in range(len(series.samples))])


def _orig(series):
    return np.stack([s.read() for s in series.samples])


@pytest.mark.parametrize("method", ["em", "salm", "salm-v1", "random"])
def test_budget_holds_after_rounding_uint8(breast, method):
    r = protect_series([breast], ProtectSettings(method=method, mask_ratio=0.1, **FAST))
    prot, orig = _all(r, breast), _orig(breast)
    diff = np.abs(prot - orig)
    # 8-bit: epsilon 8/255 is exactly 8 grey levels, rounding can not add anything beyond it.
    assert diff.max() <= 8.0 + 1e-6
    assert diff.max() >= 7.0  # the noise really uses the budget
    assert np.all(prot == np.rint(prot)) and prot.min() >= 0 and prot.max() <= 255
    assert r.summary["max_abs_change_native"] == pytest.approx(diff.max())
    assert r.summary["fraction_pixels_changed"] == pytest.approx(np.count_nonzero(diff) / diff.size)
    if method != "em":
        assert r.summary["fraction_pixels_changed"] <= 0.1 + 1e-9


def test_budget_holds_for_ct_like_int16_with_rescale(breast):
    """Native HU = stored * 1 - 1024, CT soft-tissue window W400: 8/255 of it = 12.5 HU, stored in int16
    steps, also for the many pixels outside the window."""
    imgs = np.stack([s.read() for s in breast.samples[:40]]).astype(np.float32) * 8 - 1100  # HU-like, some below window
    stored = StoredFormat.for_dtype("int16", slope=1.0, intercept=-1024.0, bits_stored=12)
    stored_vals = stored.to_stored(imgs)
    native = stored.to_native(stored_vals)
    ser = series_from_arrays(native, [int(s.label) for s in breast.samples[:40]], name="ct", intensity=IntensityMap.for_ct(), stored=stored)
    for method in ("salm", "em"):
        r = protect_series([ser], ProtectSettings(method=method, mask_ratio=0.2, **FAST))
        prot, orig = _all(r, ser), _orig(ser)
        eps_native = ser.intensity.delta_to_native(8 / 255)
        assert r.summary["epsilon_native"] == pytest.approx(12.549, abs=1e-2)
        assert np.abs(prot - orig).max() <= eps_native + 0.5 * stored.slope + 1e-4
        # the output is representable: integers in the 12-bit signed range after the rescale
        st = (prot - stored.intercept) / stored.slope
        assert np.all(st == np.rint(st)) and st.min() >= -2048 and st.max() <= 2047


def test_pixels_outside_mask_are_bit_identical(breast):
    r = protect_series([breast], ProtectSettings(method="salm-v1", mask_ratio=0.05, **FAST))
    numel = 28 * 28
    for i in range(len(breast.samples)):
        d = r.delta(breast.id, i)
        p = r.protected(breast.id, i)
        o = breast.samples[i].read()
        assert np.count_nonzero(d) <= round(0.05 * numel)
        assert np.array_equal(p[d == 0], o[d == 0])  # exact original values
        assert np.all(np.abs(d) <= 8 / 255 + 1e-7)


def test_same_seed_same_output_other_seed_differs(breast):
    s = ProtectSettings(method="salm-v1", mask_ratio=0.2, seed=3, **FAST)
    a = _all(protect_series([breast], s), breast)
    b = _all(protect_series([breast], ProtectSettings(method="salm-v1", mask_ratio=0.2, seed=3, **FAST)), breast)
    c = _all(protect_series([breast], ProtectSettings(method="salm-v1", mask_ratio=0.2, seed=4, **FAST)), breast)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # global RNG state must not matter
    torch.manual_seed(1234)
    np.random.seed(99)
    d = _all(protect_series([breast], ProtectSettings(method="salm-v1", mask_ratio=0.2, seed=3, **FAST)), breast)
    assert np.array_equal(a, d)


def test_cancel_stops_within_one_batch(breast):
    seen = []
    progress = Progress()

    def listener(ev):
        if ev.stage == "protect" and "perturbing" in ev.message:
            seen.append(ev.done)
            progress.cancel()

    progress.add_listener(listener)
    with pytest.raises(Cancelled):
        protect_series([breast], ProtectSettings(method="em", batch_size=16, max_rounds=3, pgd_steps=3, train_steps=2), progress)
    assert len(seen) == 1  # the first perturbed batch reported, then the job stopped


def test_progress_reports_rounds_and_accuracy(breast):
    events = []
    protect_series([breast], ProtectSettings(method="em", **FAST), Progress(events.append))
    prot = [e for e in events if e.stage == "protect"]
    assert prot[-1].done == prot[-1].total
    assert any("surrogate_accuracy" in e.metrics and e.metrics.get("round", 0) >= 1 for e in prot)
    dones = [e.done for e in prot]
    assert dones == sorted(dones)


def _bright_square_series(n: int = 64, seed: int = 0):
    """Label is a function of the image: class 1 has a bright square, class 0 a dark one."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(60, 120, size=(n, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 2, size=n)
    for i, lab in enumerate(labels):
        imgs[i, 8:20, 8:20] = 230 if lab else 10
    return imgs, labels


def test_labels_stay_aligned_after_shuffling():
    imgs, labels = _bright_square_series()
    ser = series_from_arrays(imgs, labels, name="squares")
    r = protect_series([ser], ProtectSettings(method="em", max_rounds=3, pgd_steps=3, train_steps=15, batch_size=16, stop_accuracy=1.01))
    assert r.labels_used(ser.id) == [int(v) for v in labels]
    # the surrogate can only learn this task when images and labels stayed paired through shuffling
    assert r.summary["surrogate_accuracy"] >= 0.95


def test_pseudo_labels_line_up_with_samples():
    imgs, labels = _bright_square_series(seed=1)
    ser = series_from_arrays(imgs, None, name="unlabelled")
    r = protect_series([ser], ProtectSettings(method="salm-v1", labels="clusters", n_clusters=2, **FAST))
    pseudo = np.array(r.labels_used(ser.id))
    agree = max(np.mean(pseudo == labels), np.mean(pseudo != labels))
    assert agree == 1.0
    with pytest.raises(ValueError, match="no label"):
        protect_series([ser], ProtectSettings(method="salm-v1", **FAST))


@pytest.mark.parametrize("precision", ["auto", "fp32_fast"])  # fp32_fast: channels-last 3D and folded batch norms too
def test_3d_volumes_and_mixed_sizes_in_one_job(medmnist_dir, breast, precision):
    with np.load(medmnist_dir / "adrenalmnist3d.npz") as z:
        vols, vlabels = z["train_images"][:6], z["train_labels"][:6]
    vol_series = series_from_arrays(vols, vlabels, name="adrenal")
    rng = np.random.default_rng(0)
    big = np.stack([np.kron(s.read(), np.ones((2, 2))).astype(np.uint8)[:, :52] for s in breast.samples[:10]])  # 56x52
    big_series = series_from_arrays(big, rng.integers(0, 2, 10), name="big")
    small = series_from_arrays(_orig(breast)[:20].astype(np.uint8), [s.label for s in breast.samples[:20]], name="small")
    r = protect_series([vol_series, big_series, small], ProtectSettings(method="salm-v1", mask_ratio=0.1, precision=precision,
                                                                      **{**FAST, "max_rounds": 1}))
    for ser, shape in ((vol_series, (28, 28, 28)), (big_series, (56, 52)), (small, (28, 28))):
        for i in range(len(ser.samples)):
            p = r.protected(ser.id, i)
            o = ser.samples[i].read()
            assert p.shape == shape
            assert np.abs(p - o).max() <= 8
            assert np.count_nonzero(p != o) <= round(0.1 * o.size)
    assert np.count_nonzero(_all(r, vol_series) != _orig(vol_series)) > 0
    assert r.summary["samples"] == 36


def test_large_store_goes_to_memmap_and_gives_same_result(breast, monkeypatch):
    s = ProtectSettings(method="salm-v1", mask_ratio=0.1, **FAST)
    a = _all(protect_series([breast], s), breast)
    monkeypatch.setattr(store_mod.ArrayStore.__init__, "__defaults__", (1024,))
    r = protect_series([breast], s)
    bucket, _ = r._where[(breast.id, 0)]
    assert bucket.delta.on_disk and bucket.clean.on_disk
    assert np.array_equal(a, _all(r, breast))
    r.close()


def test_random_baseline_changes_requested_fraction(breast):
    r = protect_series([breast], ProtectSettings(method="random", mask_ratio=0.2, **FAST))
    frac = np.count_nonzero(np.stack([r.delta(breast.id, i) for i in range(len(breast.samples))])) / (64 * 784)
    assert 0.17 <= frac <= round(0.2 * 784) / 784  # minus pixels the [0, 1] range forbids moving
    assert r.summary["rounds"] == 0


def test_foreground_restricts_the_mask():
    img = np.zeros((64, 64), np.uint8)
    img[16:48, 16:48] = 180
    img[24:40, 24:40] = 120
    ser = series_from_arrays(np.stack([img, img[::-1]] * 8), [0, 1] * 8, name="fg")
    r = protect_series([ser], ProtectSettings(method="salm-v1", mask_ratio=0.3, foreground=True, **FAST))
    d = r.delta(ser.id, 0)
    assert np.count_nonzero(d) > 0
    assert np.count_nonzero(d[:14, :]) == 0 and np.count_nonzero(d[:, :14]) == 0  # background untouched


def test_preview_mask_512_on_cpu_marks_the_ratio_and_is_stable(dicom_dir):
    # Its speed is measured in benchmarks/preview_speed.py, not asserted here (a busy CI box is noisy).
    rng = np.random.default_rng(0)
    img = (rng.normal(0, 1, (512, 512)).cumsum(0).cumsum(1) % 2000 - 1000).astype(np.int16)
    ser = series_from_arrays(img[None], [0], name="ct512", intensity=IntensityMap.for_ct(), stored=StoredFormat.for_dtype("int16"))
    preview_mask(ser.samples[0], ser.intensity, 0.1, device="cpu")  # build + cache the surrogate
    m = preview_mask(ser.samples[0], ser.intensity, 0.1, device="cpu")
    assert m.shape == (512, 512) and m.dtype == bool
    assert abs(m.mean() - 0.1) < 0.005
    m2 = preview_mask(ser.samples[0], ser.intensity, 0.1, device="cpu")
    assert np.array_equal(m, m2)


def test_bad_settings_and_input_give_one_line_errors(breast):
    with pytest.raises(ValueError, match="method"):
        ProtectSettings(method="magic")
    with pytest.raises(ValueError, match="mask_ratio"):
        ProtectSettings(mask_ratio=0)
    ser = series_from_arrays(np.zeros((2, 3, 4, 4, 4), np.uint8), [0, 1], name="4d")
    with pytest.raises(ValueError, match="only 2D images and 3D volumes"):
        protect_series([ser], ProtectSettings(**FAST))


def test_512_ct_slices_run_on_the_cpu_with_the_downsampling_stem():
    rng = np.random.default_rng(0)
    stored = StoredFormat.for_dtype("int16", intercept=-1024.0, bits_stored=12)
    imgs = stored.to_native(stored.to_stored(rng.normal(0, 300, (4, 512, 512)).cumsum(1) % 1500 - 1000))
    ser = series_from_arrays(imgs, [0, 1, 0, 1], name="ct512", intensity=IntensityMap.for_ct(), stored=stored)
    r = protect_series([ser], ProtectSettings(method="salm-v1", mask_ratio=0.1, max_rounds=1, pgd_steps=2, train_steps=1, batch_size=4, device="cpu"))
    p, o = r.protected(ser.id, 2), ser.samples[2].read()
    assert 0 < np.count_nonzero(p != o) <= round(0.1 * 512 * 512)
    assert np.abs(p - o).max() <= 2000 * 8 / 255 + 0.5


def test_class_mask_scope_gives_one_mask_per_class(breast):
    r = protect_series([breast], ProtectSettings(method="salm-v1", mask_ratio=0.1, mask_scope="class", stop_accuracy=2.0, **FAST))
    labels = np.array(r.labels_used(breast.id))
    masks = np.stack([r.delta(breast.id, i) != 0 for i in range(len(breast.samples))])
    for c in (0, 1):
        ref = masks[labels == c][0]
        # every sample of the class uses (a subset of, where the [0, 1] range blocks a pixel) the class mask
        assert all(np.all(m <= ref) or np.mean(m == ref) > 0.97 for m in masks[labels == c])
    assert masks.mean() <= round(0.1 * 784) / 784 + 1e-9


def test_class_from_start_scope_uses_the_class_masks_already_in_round_one(breast):
    def class_masks(scope):
        r = protect_series([breast], ProtectSettings(method="salm-v1", mask_ratio=0.1, mask_scope=scope, stop_accuracy=2.0,
                                                     **{**FAST, "max_rounds": 1}))
        labels = np.array(r.labels_used(breast.id))
        masks = np.stack([r.delta(breast.id, i) != 0 for i in range(len(breast.samples))])
        # pixels changed anywhere in the class / pixels a single sample may change
        return [masks[labels == c].any(0).sum() / round(0.1 * 784) for c in (0, 1)]

    assert all(spread <= 1.0 for spread in class_masks("class_from_start"))  # one shared mask per class
    assert all(spread > 1.5 for spread in class_masks("class"))  # round 1 of "class" still uses sample masks
    with pytest.raises(ValueError, match="mask_scope"):
        ProtectSettings(mask_scope="classes")


def test_extra_rounds_keep_optimizing_after_the_stop_accuracy(breast):
    small = dict(pgd_steps=3, train_steps=2, batch_size=32)
    # stop_accuracy 0 is reached in round 1; extra_rounds=0 (the default) stops there as before
    base = protect_series([breast], ProtectSettings(method="salm-v1", stop_accuracy=0.0, max_rounds=5, **small))
    same = protect_series([breast], ProtectSettings(method="salm-v1", stop_accuracy=0.0, max_rounds=5, extra_rounds=0, **small))
    assert base.summary["rounds"] == 1 and base.summary["stop_round"] == 1
    assert all(np.array_equal(base.delta(breast.id, i), same.delta(breast.id, i)) for i in range(len(breast.samples)))
    # two more rounds after the stop: exactly what three rounds without a stop give
    events = []
    more = protect_series([breast], ProtectSettings(method="salm-v1", stop_accuracy=0.0, max_rounds=5, extra_rounds=2, **small),
                          Progress(events.append))
    full = protect_series([breast], ProtectSettings(method="salm-v1", stop_accuracy=2.0, max_rounds=3, **small))
    assert more.summary["rounds"] == 3 and more.summary["stop_round"] == 1 and more.summary["extra_rounds"] == 2
    assert full.summary["stop_round"] is None
    assert all(np.array_equal(more.delta(breast.id, i), full.delta(breast.id, i)) for i in range(len(breast.samples)))
    prot = [e for e in events if e.stage == "protect"]
    assert prot[-1].done == prot[-1].total and [e.done for e in prot] == sorted(e.done for e in prot)
    # max_rounds still caps the job
    capped = protect_series([breast], ProtectSettings(method="salm-v1", stop_accuracy=0.0, max_rounds=2, extra_rounds=5, **small))
    assert capped.summary["rounds"] == 2
    with pytest.raises(ValueError, match="extra_rounds"):
        ProtectSettings(extra_rounds=-1)


def test_stop_loss_holds_the_stop_until_the_surrogate_loss_is_low_enough(breast):
    small = dict(method="salm-v1", pgd_steps=3, train_steps=2, batch_size=32, stop_accuracy=0.0, max_rounds=3)
    logs = []
    loose = protect_series([breast], ProtectSettings(stop_loss=1e6, **small),
                           Progress(lambda e: logs.append(e.message) if e.stage == "log" else None))
    assert loose.summary["rounds"] == 1 and loose.summary["stop_loss"] == 1e6
    # the reported loss is the mean cross-entropy over all samples: finite, positive, and in the log line
    loss = loose.summary["surrogate_loss"]
    assert 0 < loss < 10
    assert any(f"loss {loss:.4f}" in m for m in logs), logs
    # a loss no surrogate reaches keeps the job going until max_rounds, like an unreachable accuracy
    strict = protect_series([breast], ProtectSettings(stop_loss=1e-12, **small))
    unreachable = protect_series([breast], ProtectSettings(**{**small, "stop_accuracy": 2.0}))
    assert strict.summary["rounds"] == 3 and strict.summary["stop_round"] is None
    assert all(np.array_equal(strict.delta(breast.id, i), unreachable.delta(breast.id, i)) for i in range(len(breast.samples)))
    with pytest.raises(ValueError, match="stop_loss"):
        ProtectSettings(stop_loss=0)
