"""The thief's countermeasures (evaluate/defenses.py), their use in the efficacy check and the CLI,
and the robust (expectation over transformation) generation option of the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salm_desktop import cli
from salm_desktop.core.evaluate import evaluate_efficacy, medmnist_series
from salm_desktop.core.evaluate.defenses import (
    ADV_EPS, DATASET_LEVEL, DEFENSES, augment, canonical, defend_batch, parse_defense, pgd_adversarial,
    prepare_training_set,
)
from salm_desktop.core.evaluate.efficacy import PlainCNN
from salm_desktop.core.protect import ProtectSettings, protect_series
from salm_desktop.core.protect.robust import random_transform, robust_mode


@pytest.fixture(scope="module")
def breast(medmnist_dir: Path) -> dict:
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def batch(breast) -> torch.Tensor:
    return torch.from_numpy(breast["train_images"][:32].astype(np.float32) / 255.0).unsqueeze(1)


@pytest.mark.parametrize("name", DATASET_LEVEL)
def test_dataset_defenses_keep_shape_and_range_and_change_the_images(batch, name):
    out = prepare_training_set(batch, name)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out - batch).abs().mean()) > 1e-3  # it does something
    assert float((out - batch).abs().mean()) < 0.1  # and the image is still the image


def test_median_removes_an_isolated_spike_and_blur_spreads_it():
    x = torch.full((1, 1, 16, 16), 0.3)
    x[0, 0, 8, 8] = 1.0
    med = prepare_training_set(x, "median")
    assert torch.allclose(med, torch.full_like(x, 0.3))
    blur = prepare_training_set(x, "blur")
    assert 0.3 < float(blur[0, 0, 8, 8]) < 0.6  # spike flattened...
    assert float(blur[0, 0, 8, 9]) > 0.31  # ...into its neighbours
    assert abs(float(blur.sum()) - float(x.sum())) < 1e-3  # mass kept
    flat = prepare_training_set(torch.full((1, 1, 16, 16), 0.3), "blur")
    assert torch.allclose(flat, torch.full_like(flat, 0.3))  # borders are not darkened


def test_jpeg10_changes_more_than_jpeg75_and_stays_8bit(batch):
    j75 = prepare_training_set(batch, "jpeg75")
    j10 = prepare_training_set(batch, "jpeg10")
    assert float((j10 - batch).abs().mean()) > 1.5 * float((j75 - batch).abs().mean())
    assert torch.allclose(j10 * 255, torch.round(j10 * 255), atol=1e-4)


def test_bitdepth_leaves_at_most_eight_levels(batch):
    out = prepare_training_set(batch, "bitdepth")
    assert len(torch.unique(out)) <= 8
    assert len(torch.unique(batch)) > 100
    assert float((out - batch).abs().max()) <= 0.5 / 7 + 1e-6


def test_augment_flips_and_shifts_each_image_reproducibly(batch):
    a = augment(batch, torch.Generator().manual_seed(3))
    b = augment(batch, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == batch.shape
    changed = [(a[i] - batch[i]).abs().max().item() > 0 for i in range(len(batch))]
    assert sum(changed) >= len(batch) // 2
    # every output image is a flipped and/or shifted copy of its input: same set of values (border replicated)
    for i in range(4):
        assert set(a[i].unique().tolist()) <= set(batch[i].unique().tolist())


def test_pgd_adversarial_stays_in_budget_and_raises_the_loss(batch, breast):
    torch.manual_seed(0)
    model = PlainCNN(2, 2).eval()
    y = torch.from_numpy(breast["train_labels"][:32, 0].astype(np.int64))
    adv = pgd_adversarial(model, batch, y, torch.Generator().manual_seed(0))
    assert float((adv - batch).abs().max()) <= ADV_EPS + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(batch), y)
    assert all(p.requires_grad for p in model.parameters())  # parameters handed back trainable
    out = defend_batch("advtrain", batch, torch.Generator().manual_seed(0), model, y)
    assert torch.equal(out, adv)
    with pytest.raises(ValueError, match="model"):
        defend_batch("advtrain", batch, torch.Generator())


def test_names_parse_combine_and_reject_unknown():
    assert parse_defense(None) == () and parse_defense("none") == ()
    assert canonical("JPEG10 + augment") == "jpeg10+augment"
    assert canonical("none") is None
    assert set(DEFENSES) >= {"augment", "blur", "median", "jpeg75", "jpeg10", "bitdepth", "advtrain"}
    with pytest.raises(ValueError, match="unknown defense 'gamma'.*jpeg10"):
        parse_defense("blur+gamma")


def test_evaluate_with_a_defense_runs_end_to_end_on_breastmnist(breast):
    torch.set_num_threads(1)
    train = (breast["train_images"][:64], breast["train_labels"][:64])
    test = (breast["test_images"][:40], breast["test_labels"][:40])
    res = evaluate_efficacy(train, train, test, arch="cnn", epochs=2, seed=0, defense="jpeg10+augment")
    assert res["defense"] == "jpeg10+augment"
    for part in ("protected", "clean"):
        assert len(res[part]["history"]) == 2
        for k in ("acc", "balanced_acc", "auc"):
            assert 0.0 <= res[part]["final"][k] <= 1.0
    plain = evaluate_efficacy(train, None, test, arch="cnn", epochs=2, seed=0, defense=None)
    # the defense reaches the training data: the same seed gives different predictions
    assert plain["protected"]["history"] != res["protected"]["history"]
    with pytest.raises(ValueError, match="unknown defense"):
        evaluate_efficacy(train, None, test, epochs=1, defense="sharpen")


def test_cli_evaluate_runs_each_comma_separated_defense_and_refuses_unknown(breast, tmp_path, capsys):
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=breast["train_images"][:40], train_labels=breast["train_labels"][:40],
             test_images=breast["test_images"][:20], test_labels=breast["test_labels"][:20])
    code = cli.main(["evaluate", "--protected", str(npz), "--clean", str(npz), "--epochs", "1",
                     "--defense", "median,bitdepth", "--json"])
    assert code == cli.EXIT_OK
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["defense"] for r in doc["results"]] == ["median", "bitdepth"]
    code = cli.main(["evaluate", "--protected", str(npz), "--clean", str(npz), "--defense", "sharpen"])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "sharpen" in err and "jpeg10" in err and "Traceback" not in err


def test_random_transform_is_differentiable_reproducible_and_in_range(batch):
    x = batch.clone().requires_grad_(True)
    out = random_transform(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    again = random_transform(batch, torch.Generator().manual_seed(1))
    assert torch.allclose(again, out.detach())
    assert not torch.allclose(out.detach(), batch)
    half = random_transform(batch, torch.Generator().manual_seed(2), p_identity=0.5)
    kept = (half == batch).flatten(1).all(1).float().mean()
    assert 0.2 < float(kept) < 0.8  # about half of the samples untransformed
    assert [robust_mode(v) for v in (False, None, True, "full", "pgd")] == ["off", "off", "full", "full", "pgd"]
    with pytest.raises(ValueError, match="robust"):
        robust_mode("always")


def test_robust_generation_respects_budget_and_mask(medmnist_dir):
    torch.set_num_threads(1)
    series = medmnist_series(medmnist_dir / "breastmnist.npz", "train", n=24)
    settings = ProtectSettings(method="salm", mask_ratio=0.1, robust=True, max_rounds=1, pgd_steps=3, train_steps=2,
                               batch_size=12, device="cpu", seed=0)
    res = protect_series([series], settings)
    assert res.summary["robust"] == "full"
    eps_native = 255 * settings.epsilon
    for i, smp in enumerate(series.samples):
        orig = smp.read()
        prot = res.protected(series.id, i)
        d = res.delta(series.id, i)
        assert np.abs(prot - orig).max() <= eps_native + 1e-4
        assert np.count_nonzero(d) <= int(round(0.1 * d.size)) + 1  # only the mask may change
        assert np.all(prot[d == 0] == orig[d == 0])
    again = protect_series([series], settings)
    assert np.array_equal(again.protected(series.id, 5), res.protected(series.id, 5))
