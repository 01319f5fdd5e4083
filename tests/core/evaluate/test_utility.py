"""Clinical utility (issue 13): the hospital's clean-trained model on clean versus protected test images, and the
texture augmentation that teaches such a model to ignore the protection's textures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from salm_desktop import cli
from salm_desktop.core.evaluate import load_split
from salm_desktop.core.evaluate.utility import compare_predictions, consistency_loss, evaluate_utility, texture_augment
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


class _Linear(torch.nn.Module):
    """logits = w . x with random pixel weights: a model whose answer a texture moves (unless w is 0)."""

    def __init__(self, scale: float):
        super().__init__()
        w = torch.randn(1, 28 * 28, generator=torch.Generator().manual_seed(2))
        self.w = torch.nn.Parameter(torch.cat([w, -w]) * scale)

    def forward(self, x):  # noqa: ANN001
        return x.flatten(1) @ self.w.T


def test_consistency_loss_is_the_cross_entropy_of_both_copies_plus_their_disagreement():
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 2
    blind = _Linear(0.0)  # the same answer for every image: nothing to disagree about
    loss = consistency_loss(blind, x, y, torch.Generator().manual_seed(0), EPS, unlabelled_textures, weight=10.0)
    assert float(loss) == pytest.approx(np.log(2), abs=1e-6)
    seeing = _Linear(1.0)
    fit_only = consistency_loss(seeing, x, y, torch.Generator().manual_seed(0), EPS, unlabelled_textures, weight=0.0)
    weighted = consistency_loss(seeing, x, y, torch.Generator().manual_seed(0), EPS, unlabelled_textures, weight=1.0)
    textured = texture_augment(x, torch.Generator().manual_seed(0), EPS, unlabelled_textures, share=1.0)
    logits_plain, logits_tex = seeing(x), seeing(textured)
    ce = 0.5 * (torch.nn.functional.cross_entropy(logits_plain, y) + torch.nn.functional.cross_entropy(logits_tex, y))
    assert float(fit_only) == pytest.approx(float(ce), rel=1e-5)
    p, q = logits_plain.log_softmax(1), logits_tex.log_softmax(1)
    sym_kl = 0.5 * ((p.exp() * (p - q)).sum(1).mean() + (q.exp() * (q - p)).sum(1).mean())
    assert float(sym_kl) > 1e-4  # the texture moved this model
    assert float(weighted - fit_only) == pytest.approx(float(sym_kl), rel=1e-3)  # a float32 difference
    weighted.backward()
    assert seeing.w.grad is not None and float(seeing.w.grad.abs().sum()) > 0
    # unstructured noise on the copy (the recipe's variant): a different copy, the same loss when nothing can disagree
    noisy = consistency_loss(seeing, x, y, torch.Generator().manual_seed(0), EPS, unlabelled_textures, weight=1.0,
                             noise_share=0.3)
    assert float(noisy) != pytest.approx(float(weighted), rel=1e-6)
    assert float(consistency_loss(blind, x, y, torch.Generator().manual_seed(0), EPS, unlabelled_textures,
                                  noise_share=0.3)) == pytest.approx(np.log(2), abs=1e-6)


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


@pytest.mark.parametrize("recipe", ["texture", "consistency"])
def test_cli_evaluate_utility_with_the_texture_recipes(small_release, capsys, recipe):
    clean, protected = small_release
    assert cli.main(["evaluate", "--protected", str(protected), "--clean", str(clean), "--utility",
                     "--utility-augment", recipe, "--epochs", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["utility"]["augment"] == recipe


def test_other_versions_of_the_test_split_are_compared_with_the_same_model(small_release):
    clean, protected = small_release
    train, test, ptest = load_split(clean, "train"), load_split(clean, "test"), load_split(protected, "test")
    out = evaluate_utility(train, test, ptest, epochs=1, other_versions={"itself": test[0], "protected": ptest[0]})
    assert out["other_versions"]["itself"]["identical_predictions"] == 1.0
    assert out["other_versions"]["itself"]["auc_change"] == 0.0
    # the same model: the protected copy passed as another version gives exactly the main comparison
    assert out["other_versions"]["protected"]["identical_predictions"] == out["identical_predictions"]
    with pytest.raises(ValueError, match="'cropped'.*do not match"):
        evaluate_utility(train, test, ptest, epochs=1, other_versions={"cropped": test[0][:, :20]})


def test_the_user_guide_snippet_for_the_hospitals_training_loop_runs():
    """The few lines docs/user-guide.md gives a hospital's ML team ("Training your own models ...") run as printed."""
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[3] / "docs" / "user-guide.md").read_text(encoding="utf-8")
    section = guide[guide.index("### Training your own models"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 3)]
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(5)
    loader = [(torch.rand(8, 1, 28, 28, generator=gen), torch.randint(0, 2, (8,), generator=gen)) for _ in range(2)]
    scope = {"model": model, "loader": loader, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    exec(compile(code, "user-guide.md", "exec"), scope)  # noqa: S102 - our own documentation
    assert torch.isfinite(scope["loss"]) and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
