"""The thief suite: augmentation, recipes, one real (tiny) training run, the verdict and the evaluate CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from salm_desktop.cli import main as cli_main
from salm_desktop.core.evaluate.thieves import (ThiefRecipe, build_thief, crop_flip, default_suite, parse_thief,
                                                rank_power, run_thief, summarize, to_tensor)
from salm_desktop.core.evaluate.verdict import decide, verdict_line

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def breast(medmnist_dir):
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        return {s: (z[f"{s}_images"], z[f"{s}_labels"].reshape(-1)) for s in ("train", "val", "test")}


def test_crop_flip_is_a_shifted_possibly_flipped_copy(breast):
    x = to_tensor(breast["train"][0][:8])
    out = crop_flip(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    again = crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)  # deterministic for a generator seed
    padded = torch.nn.functional.pad(x, [4, 4, 4, 4])
    for i in range(len(x)):
        views = [padded[i, 0, dy:dy + 28, dx:dx + 28] for dy in range(9) for dx in range(9)]
        views += [v.flip(-1) for v in views]
        assert any(torch.equal(out[i, 0], v) for v in views)
    assert not torch.equal(out, x)  # something moved


def test_recipes_names_and_architectures():
    suite = default_suite()
    assert {r.arch for r in suite} == {"cnn", "resnet18", "vgg"}
    assert {r.optimizer for r in suite} == {"sgd", "adam"}
    assert any(not r.augment for r in suite) and any(r.clean_mix == 0.1 for r in suite)
    assert any(r.prefilter == "blur" and r.augment for r in suite)  # the filter that removed the texture's effect
    assert all(r.epochs >= 20 for r in suite)
    assert parse_thief("vgg-adam-noaug-5ep") == ThiefRecipe("vgg", "adam", 5, augment=False)
    assert parse_thief("resnet18-sgd-aug-mix10", 3).clean_mix == 0.1
    assert parse_thief("cnn-sgd-aug-median-20ep") == ThiefRecipe("cnn", "sgd", 20, prefilter="median")
    assert parse_thief("cnn-sgd-aug-median-20ep").name == "cnn-sgd-aug-median-20ep"  # the grid's cache key
    with pytest.raises(ValueError, match="FILTER one of blur, median"):
        parse_thief("cnn-sgd-aug-sharpen")
    with pytest.raises(ValueError, match="prefilter"):
        ThiefRecipe("cnn", prefilter="augment")  # a batch-level defense is not a filter
    with pytest.raises(ValueError, match="unknown part"):
        parse_thief("resnet18-rmsprop")
    with pytest.raises(ValueError, match="architecture"):
        parse_thief("alexnet")
    for arch in ("cnn", "resnet18", "vgg"):
        model = build_thief(arch, 2)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 2)
        assert model.embed(torch.zeros(2, 1, 28, 28)).shape[1] == model.fc.in_features
    assert rank_power(0.2) == pytest.approx(0.8) and rank_power(0.7) == pytest.approx(0.7)


def test_run_thief_on_real_images_reports_every_view(breast):
    n = 96
    x, y = breast["train"][0][:n], breast["train"][1][:n]
    recipe = ThiefRecipe("cnn", "sgd", epochs=2, batch_size=32, few_clean=20)
    res = run_thief(x, y, breast["val"], breast["test"], recipe, seed=1, clean_train_images=x)
    for view in ("final", "val_selected", "few_clean_final", "few_clean_val_selected"):
        assert set(res[view]) >= {"rank_power", "balanced_acc", "auc", "acc"}
        assert 0.5 <= res[view]["rank_power"] <= 1.0
    assert res["val_selected"]["epoch"] in (1, 2) and len(res["history"]) == 2
    assert res["final"]["rank_power"] == pytest.approx(res["history"][-1]["rank_power"], abs=1e-3)
    again = run_thief(x, y, breast["val"], breast["test"], recipe, seed=1, clean_train_images=x)
    assert again["final"] == res["final"]  # same seed, same thief
    s = summarize([res, again])
    assert s["n"] == 2 and s["final"]["rank_power"]["min"] == s["final"]["rank_power"]["max"]


def test_a_median_prefilter_removes_an_isolated_pixel_shortcut_from_everything_the_thief_sees(breast):
    """Labels at random, the only signal a grid of isolated bright pixels on class 1, in training and
    test images alike: the plain thief reads it; the median thief cannot, because the filter also
    runs on the test patients (a filter on the training split alone would leave it in the test)."""
    rng = np.random.default_rng(0)

    def dotted(images):
        y = rng.integers(0, 2, len(images))
        x = images.copy()
        x[y == 1, 2::5, 2::5] = 255
        return x, y

    train, val, test = dotted(breast["train"][0][:256]), dotted(breast["val"][0]), dotted(breast["test"][0][:128])
    plain = run_thief(*train, val, test, parse_thief("cnn-sgd-noaug-4ep"), seed=0)
    filtered = run_thief(*train, val, test, parse_thief("cnn-sgd-noaug-median-4ep"), seed=0)
    assert plain["final"]["rank_power"] > 0.95, plain["final"]
    assert filtered["final"]["rank_power"] < 0.75, filtered["final"]
    assert filtered["recipe"] == "cnn-sgd-noaug-median-4ep"


def test_verdict_thresholds():
    clean = {"final": 0.9, "val_selected": 0.9}
    assert decide({"a": {"protected": {"final": 0.55, "val_selected": 0.58}, "clean": clean}})["verdict"] == "protected"
    partly = decide({"a": {"protected": {"final": 0.62, "val_selected": 0.69}, "clean": clean}})
    assert partly["verdict"] == "partly protected" and partly["margin_kept"] == pytest.approx(0.19 / 0.4)
    v = decide({"a": {"protected": {"final": 0.55, "val_selected": 0.56}, "clean": clean},
                "b": {"protected": {"final": 0.60, "val_selected": 0.85}, "clean": clean}})
    assert v["verdict"] == "not protected" and v["worst_thief"] == "b"
    line = verdict_line(v)
    assert line.startswith("Verdict: not protected") and "0.85" in line and "0.60" in line and "\n" not in line


def test_cli_evaluate_ends_with_one_verdict_line(tmp_path, breast, capsys):
    small = {f"{s}_{k}": a[:40] for s, (im, lab) in breast.items() for k, a in (("images", im), ("labels", lab))}
    clean = tmp_path / "clean.npz"
    np.savez(clean, **small)
    prot = tmp_path / "prot.npz"
    np.savez(prot, train_images=np.clip(small["train_images"].astype(int) + 8, 0, 255).astype(np.uint8),
             train_labels=small["train_labels"])
    rc = cli_main(["evaluate", "--protected", str(prot), "--clean", str(clean), "--epochs", "1", "--thieves", "cnn-sgd-aug"])
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert sum(ln.startswith("Verdict: ") for ln in lines) == 1
    assert lines[-1].startswith(("Verdict: protected", "Verdict: partly protected", "Verdict: not protected"))
    assert "Thresholds:" in lines[-1]
    rc = cli_main(["evaluate", "--protected", str(prot), "--clean", str(clean), "--epochs", "1", "--thieves",
                   "cnn-sgd-noaug", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["verdict"]["verdict"] in ("protected", "partly protected", "not protected")
    assert set(doc["thieves"]["cnn-sgd-noaug-1ep"]) >= {"protected", "clean"}
    assert cli_main(["evaluate", "--protected", str(prot), "--clean", str(clean), "--thieves", "lenet"]) == 2
    assert "lenet" in capsys.readouterr().err
