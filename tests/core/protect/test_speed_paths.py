"""The fast paths of the engine (issue 20): bf16 autocast, early exit of PGD, precision choice.

Speed itself is measured in benchmarks/throughput.py; these tests check that the fast paths keep
the budget, the quantization, the mask and determinism, on real BreastMNIST images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from salm_desktop.core.evaluate import medmnist_series
from salm_desktop.core.protect import ProtectSettings, protect_series
from salm_desktop.core.protect.device import native_bf16, resolve_precision

torch.set_num_threads(1)
FAST = dict(method="salm-v1", max_rounds=2, pgd_steps=5, train_steps=4, batch_size=32, mask_ratio=0.1)  # min-min: the speed paths


@pytest.fixture(scope="module")
def breast(medmnist_dir: Path):
    return medmnist_series(medmnist_dir / "breastmnist.npz", "train", n=64)


def _protected(result, series) -> np.ndarray:
    return np.stack([result.protected(series.id, i) for i in range(len(series.samples))])


def _orig(series) -> np.ndarray:
    return np.stack([s.read() for s in series.samples])


@pytest.mark.parametrize("precision", ["fp32", "fp32_fast", "bf16", "bf16_all"])
def test_both_precisions_keep_budget_mask_and_uint8_quantization(breast, precision):
    r = protect_series([breast], ProtectSettings(precision=precision, **FAST))
    assert r.summary["precision"] == precision
    prot, orig = _protected(r, breast), _orig(breast)
    diff = np.abs(prot - orig)
    assert diff.max() <= 8.0 + 1e-6  # 8/255 of the uint8 window is 8 grey levels
    assert diff.max() >= 7.0  # the noise uses the budget in both precisions
    assert np.all(prot == np.rint(prot)) and prot.min() >= 0 and prot.max() <= 255
    assert r.summary["fraction_pixels_changed"] <= 0.1 + 1e-9
    for i in range(len(breast.samples)):  # the noise handed out is float32, zero outside the mask
        d = r.delta(breast.id, i)
        assert d.dtype == np.float32 and np.count_nonzero(d) <= round(0.1 * d.size)


@pytest.mark.parametrize("precision", ["fp32", "fp32_fast", "bf16"])
def test_same_settings_give_bit_identical_output_with_early_exit(breast, precision):
    settings = ProtectSettings(precision=precision, early_exit_loss=0.05, **FAST)
    a = protect_series([breast], settings)
    b = protect_series([breast], settings)
    assert np.array_equal(_protected(a, breast), _protected(b, breast))
    assert a.summary["pgd_steps_run_fraction"] == b.summary["pgd_steps_run_fraction"]


def test_early_exit_keeps_the_noise_of_samples_at_the_floor(breast):
    """A floor no loss can be above: every sample leaves after its first step, which makes its mask.

    The result must equal one PGD step without early exit (fp32, one round, full batches of 32)."""
    base = {**{k: v for k, v in FAST.items() if k != "pgd_steps"}, "max_rounds": 1, "precision": "fp32"}
    exiting = protect_series([breast], ProtectSettings(pgd_steps=5, early_exit_loss=100.0, **base))
    one_step = protect_series([breast], ProtectSettings(pgd_steps=1, early_exit_loss=None, **base))
    assert np.array_equal(_protected(exiting, breast), _protected(one_step, breast))
    # step 1 is computed for every sample (its loss decides the exit), steps 2-4 are skipped
    assert exiting.summary["pgd_steps_run_fraction"] == pytest.approx(2 / 5)
    assert one_step.summary["pgd_steps_run_fraction"] == 1.0


def test_without_early_exit_every_step_runs(breast):
    r = protect_series([breast], ProtectSettings(precision="fp32", early_exit_loss=None, **FAST))
    assert r.summary["pgd_steps_run_fraction"] == 1.0


def test_precision_choice_and_validation():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("bf16_all", cpu) == "bf16_all"
    assert resolve_precision("fp32_fast", cpu) == "fp32_fast"
    # emulated bf16 is about ten times slower than float32 on a CPU without it (docs/benchmarks.md)
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32_fast")
    with pytest.raises(ValueError, match="precision"):
        ProtectSettings(precision="fp16")
    with pytest.raises(ValueError, match="early_exit_loss"):
        ProtectSettings(early_exit_loss=0.0)



def test_bf16_keeps_the_first_layer_in_float32_and_runs_the_rest_in_bf16():
    """precision="bf16": the first convolution and batch norm see the perturbed input in float32 (a
    PGD step of epsilon/10 is finer than bf16's resolution near 0.5) and hand bf16 on; outside autocast
    (the stop check) the model is float32 throughout and equals the unpatched network."""
    from salm_desktop.core.protect.surrogates import build_surrogate, first_layer_in_fp32

    torch.manual_seed(0)
    plain = build_surrogate("auto", 2, 2, (28, 28)).eval()
    torch.manual_seed(0)
    model = build_surrogate("auto", 2, 2, (28, 28)).eval()
    first_layer_in_fp32(model, "cpu")
    seen = {}
    model.stem.body[0].register_forward_hook(lambda m, i, o: seen.__setitem__("conv", o.dtype))
    model.stem.body[1].register_forward_hook(lambda m, i, o: seen.__setitem__("bn", o.dtype))
    model.blocks[0].conv1.register_forward_hook(lambda m, i, o: seen.__setitem__("next", o.dtype))
    x = torch.rand(4, 1, 28, 28) * 0.2 + 0.45
    with torch.no_grad():
        for net in (plain, model):  # running statistics as after training (eval-mode batch norm centres)
            net.train()
            for _ in range(30):
                net(x)
            net.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
        assert seen["conv"] == torch.float32 and seen["next"] == torch.bfloat16
        assert seen["bn"] == torch.bfloat16  # the batch norm ran on float32, its output is handed on in bf16
        assert torch.equal(model(x), plain(x))
        step = torch.sign(torch.randn_like(x)) * 0.8 / 255
        with torch.autocast("cpu", dtype=torch.bfloat16):
            stem_fine = model.stem(x + step).float() - model.stem(x).float()
            stem_coarse = plain.stem(x + step).float() - plain.stem(x).float()
        exact = plain.stem(x + step) - plain.stem(x)
    rel = lambda a: float((a - exact).norm() / exact.norm())  # noqa: E731
    assert rel(stem_fine) < 0.5 * rel(stem_coarse)


@pytest.mark.parametrize("shape", [(3, 1, 64, 48), (2, 1, 9, 20, 16)])
def test_the_banded_blur_equals_the_convolution_forward_and_backward(shape):
    """The fast paths' anti-alias blur (sparse band products, replicate borders) is the fp32 path's
    convolution to float rounding, and so is its gradient (the blur sits in front of the surrogate)."""
    from salm_desktop.core.protect.budget import _binomial_blur, _binomial_blur_banded

    z = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    fast, ref = _binomial_blur_banded(z), _binomial_blur(z)
    assert fast.shape == ref.shape and float((fast - ref).abs().max()) < 1e-6
    assert not torch.equal(fast, z)  # it does blur
    weights = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    grads = []
    for blur in (_binomial_blur_banded, _binomial_blur):
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((blur(zz) * weights).sum(), zz)
        grads.append(g)
    assert float((grads[0] - grads[1]).abs().max()) < 1e-6


@pytest.mark.parametrize("shape", [(3, 1, 64, 48), (2, 1, 9, 30, 16), (2, 1, 300, 129)])
def test_the_banded_local_mean_smoothing_equals_the_convolution(shape):
    """The fast paths' Gaussian for the local-mean-free step (band matrix products) is the fp32 path's
    convolution to float rounding, zero outside the image included (a side shorter than the kernel too)."""
    from salm_desktop.core.protect.budget import _gaussian_smooth, _gaussian_smooth_banded

    z = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    fast, ref = _gaussian_smooth_banded(z), _gaussian_smooth(z)
    assert fast.shape == ref.shape and float((fast - ref).abs().max()) < 1e-6
    assert float((fast - z).abs().max()) > 0.1  # it does smooth
    assert torch.equal(_gaussian_smooth_banded(z), fast)  # the same bytes run to run


def test_bf16_with_folded_batch_norms_keeps_the_first_convolution_in_float32():
    """precision="bf16" on the fixed surrogate: batch norms folded, the first convolution (now carrying
    its batch norm) still in float32 under autocast and handing bf16 on, the same function as the
    unfolded bf16 model to bf16 rounding, and outside autocast the float32 network."""
    from salm_desktop.core.protect.surrogates import build_surrogate, first_layer_in_fp32, fold_batch_norms

    torch.manual_seed(0)
    model = build_surrogate("auto", 2, 2, (512, 512))
    x = torch.rand(2, 1, 512, 512) * 0.2 + 0.45
    with torch.no_grad():
        model.train()
        model(x)
    model.eval().to(memory_format=torch.channels_last)
    first_layer_in_fp32(model, "cpu")
    folded = fold_batch_norms(model)
    first_layer_in_fp32(folded, "cpu")
    first = next(m for m in folded.modules() if isinstance(m, torch.nn.Conv2d))
    seen = {}
    first.register_forward_hook(lambda m, i, o: seen.__setitem__("first", (i[0].dtype, o.dtype)))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = model(x).float(), folded(x).float()
        assert seen["first"][0] == torch.float32  # it saw the input in float32
        assert float((a - b).abs().max()) <= 0.02 * float(a.abs().max()) + 1e-3
        assert float((model(x) - folded(x)).abs().max()) < 1e-5


def test_recalibrate_norms_defaults_to_salm_min_min_only():
    """"auto": salm's min-min (CT, MR, 3D) re-estimates its batch norms each round; em and salm-v1 keep
    their published / first-release behaviour; anything else is refused with the field's name."""
    assert ProtectSettings().recalibrates_norms
    assert not ProtectSettings(method="em").recalibrates_norms
    assert not ProtectSettings(method="salm-v1").recalibrates_norms
    assert ProtectSettings(method="em", recalibrate_norms=True).recalibrates_norms
    assert not ProtectSettings(recalibrate_norms=False).recalibrates_norms
    with pytest.raises(ValueError, match="recalibrate_norms"):
        ProtectSettings(recalibrate_norms="sometimes")


def test_recalibration_sets_the_running_statistics_to_the_perturbed_batches(dicom_dir):
    """On a real MR series: after _recalibrate_norms the first batch norm's running mean and variance are
    the statistics of what the surrogate sees of the perturbed samples (no stale momentum average left),
    the model is back in train mode's momentum, and nothing about the samples changed."""
    from salm_desktop.core.protect.engine import _Job
    from salm_desktop.core.protect.surrogates import build_surrogate
    from salm_desktop.core.studies import load_paths

    (series,) = load_paths([dicom_dir / "hitachi_shoulder_mr" / "dicom"]).series
    job = _Job([series], ProtectSettings(labels="clusters", precision="fp32"), None)
    job._validate()
    job._read()
    job._set_budgets()
    (bucket,) = job.buckets.values()
    bucket.delta[:] = np.random.default_rng(0).uniform(-0.02, 0.02, bucket.delta.shape).astype(np.float16)
    torch.manual_seed(0)
    model = build_surrogate("auto", 2, 2, bucket.shape)
    first_norm = model.stem.body[1]
    first_norm.running_mean.fill_(5.0)  # stale
    first_norm.running_var.fill_(9.0)
    job._recalibrate_norms(model, [bucket])
    x, d, _ = job._batch(bucket, np.arange(bucket.n))
    with torch.no_grad():
        h = model.stem.body[0](torch.clamp(x + d, 0, 1))
    assert torch.allclose(first_norm.running_mean, h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(first_norm.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert first_norm.momentum == 0.1 and model.training



def test_projection_bounds_give_exactly_the_projection():
    """The engine's per-step projection is one clamp with bounds computed once per batch: the same
    numbers as _project, for a shared and for a per-sample budget, pixels outside the window included."""
    from salm_desktop.core.protect.budget import _project, _projection_bounds

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 20, 20, generator=gen) * 1.4 - 0.2  # some pixels outside [0, 1]
    d = (torch.rand(6, 1, 20, 20, generator=gen) - 0.5) * 0.3
    for eps in (0.03, torch.linspace(0.01, 0.06, 6).view(-1, 1, 1, 1)):
        lower, upper = _projection_bounds(x, eps)
        assert torch.equal(d.clamp(lower, upper), _project(d, x, eps))
