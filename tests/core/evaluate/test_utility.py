"""Clinical utility (issue 13): the hospital's clean-trained model on clean versus protected test images, and the
texture augmentation that teaches such a model to ignore the protection's textures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from salm_desktop import cli
from salm_desktop.core.evaluate import load_split
from salm_desktop.core.evaluate.utility import compare_predictions, evaluate_utility, texture_augment
from salm_desktop.core.protect.salm_texture import CLASS_FREQUENCIES, unlabelled_textures

EPS = 8 / 255


def test_agreement_counts_every_changed_prediction_and_the_targets_need_both():
    clean = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    same = compare_predictions(clean, clean.copy(), np.array([0, 1, 0, 1]))
    assert same["identical_predictions"] == 1.0 and same["auc_change"] == 0.0 and same["targets"]["met"]
    flipped = clean.copy()
    flipped[2] = [0.45, 0.55]  # one prediction crosses the threshold; the ranking is unchanged
    out = compare_predictions(clean, flipped, np.array([0, 1, 0, 1]))
    assert out["changed_predictions"] == 1 and out["identical_predictions"] == 0.75 and not out["targets"]["met"]
    assert out["max_probability_change"] == pytest.approx(0.15)


def test_texture_augmentation_adds_the_protection_textures_within_the_budget():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((400, 1, 28, 28), 0.5)
    out = texture_augment(x, gen, EPS, unlabelled_textures, share=0.5, area=0.3)
    delta = (out - x)[:, 0].numpy()
    assert np.abs(delta).max() <= EPS + 1e-6
    assert set(np.round(np.unique(delta) / EPS).astype(int)) <= {-1, 0, 1}
    touched = np.abs(delta).sum((1, 2)) > 0
    assert 0.4 < touched.mean() < 0.6  # about half of the images
    assert 0.25 < (delta[touched] != 0).mean() < 0.35  # about 30 % of their pixels
    # each changed image carries one texture of the table: its spectrum peaks at one of the table's frequencies
    allowed = {(round(fy * 28) % 28, round(fx * 28) % 28) for fy, fx in CLASS_FREQUENCIES}
    allowed |= {((-a) % 28, (-b) % 28) for a, b in allowed} | {(a, (-b) % 28) for a, b in allowed}
    for img in delta[touched][:40]:
        spec = np.abs(np.fft.fft2(np.sign(img)))  # the texture where it is, 0 elsewhere
        spec[0, 0] = 0
        peak = np.unravel_index(spec.argmax(), spec.shape)
        assert min(abs(peak[0] - a) % 28 + abs(peak[1] - b) % 28 for a, b in allowed) <= 2, peak
    # clipped at [0, 1]
    bright = texture_augment(torch.ones(50, 1, 28, 28), gen, EPS, unlabelled_textures, share=1.0, area=0.3)
    assert float(bright.max()) == 1.0 and float(bright.min()) >= 1.0 - EPS - 1e-6


@pytest.fixture()
def small_release(medmnist_dir, tmp_path):
    """A clean npz (64 training, 24 test BreastMNIST images) and a "protected" twin: +-8 grey levels on the test split."""
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        arrays = {"train_images": z["train_images"][:64], "train_labels": z["train_labels"][:64],
                  "test_images": z["test_images"][:24], "test_labels": z["test_labels"][:24]}
    clean = tmp_path / "clean.npz"
    np.savez(clean, **arrays)
    rng = np.random.default_rng(3)
    test = arrays["test_images"].astype(np.int16)
    arrays["test_images"] = np.clip(test + np.where(rng.random(test.shape) < 0.3, 8, 0), 0, 255).astype(np.uint8)
    protected = tmp_path / "protected.npz"
    np.savez(protected, **arrays)
    return clean, protected


def test_the_hospital_model_with_texture_augmentation_is_measured_and_bad_recipes_refused(small_release):
    clean, protected = small_release
    train, test, ptest = load_split(clean, "train"), load_split(clean, "test"), load_split(protected, "test")
    out = evaluate_utility(train, test, ptest, epochs=1, augment="texture", textures=unlabelled_textures)
    assert out["augment"] == "texture" and out["test_samples"] == 24 and 0 <= out["identical_predictions"] <= 1
    assert not out["protected_test_is_unchanged"]
    with pytest.raises(ValueError, match="needs the protection's textures"):
        evaluate_utility(train, test, ptest, epochs=1, augment="texture")
    with pytest.raises(ValueError, match="unknown hospital augmentation"):
        evaluate_utility(train, test, ptest, epochs=1, augment="noise")
    volumes = (np.zeros((4, 8, 8, 8), dtype=np.uint8), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="2D images only"):
        evaluate_utility(volumes, volumes, volumes, epochs=1, augment="texture", textures=unlabelled_textures)


def test_cli_evaluate_utility_with_the_texture_recipe(small_release, capsys):
    clean, protected = small_release
    assert cli.main(["evaluate", "--protected", str(protected), "--clean", str(clean), "--utility",
                     "--utility-augment", "texture", "--epochs", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["utility"]["augment"] == "texture"
