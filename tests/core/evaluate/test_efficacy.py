"""Efficacy check: metrics, split loading, the CLI, and one real-data efficacy run (BreastMNIST)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from salm_desktop.cli import main as cli_main
from salm_desktop.core.evaluate import classification_metrics, evaluate_efficacy, load_split, medmnist_series
from salm_desktop.core.protect import ProtectSettings, protect_series

torch.set_num_threads(1)


def test_metrics_known_values():
    y = np.array([0, 0, 0, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    m = classification_metrics(probs, y)
    assert m["acc"] == pytest.approx(0.75)
    assert m["balanced_acc"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["auc"] == pytest.approx(1.0)  # the positive has the highest score: ranking is perfect
    # a constant predictor: accuracy can look fine while balanced accuracy and AUC say chance
    m = classification_metrics(np.tile([0.9, 0.1], (4, 1)), y)
    assert m["acc"] == pytest.approx(0.75) and m["balanced_acc"] == pytest.approx(0.5) and m["auc"] == pytest.approx(0.5)


def test_load_split_npz_and_png_tree(tmp_path, medmnist_dir):
    images, labels = load_split(medmnist_dir / "breastmnist.npz", "test")
    assert images.shape == (156, 28, 28) and labels.shape == (156,) and set(labels) == {0, 1}
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("0", "1"):
            d = tmp_path / "tree" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(images[i + 3 * int(cls)]).save(d / f"{i}.png")
    x, y = load_split(tmp_path / "tree", "train")
    assert x.shape == (6, 28, 28) and list(y) == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(x[3], images[3])
    with pytest.raises(ValueError, match="no 'val' folder"):
        load_split(tmp_path / "tree", "val")
    with pytest.raises(ValueError, match="no such file"):
        load_split(tmp_path / "missing.npz", "train")


def test_cli_evaluate_json(tmp_path, medmnist_dir, capsys):
    with np.load(medmnist_dir / "breastmnist.npz") as z:
        small = {k: z[k][:40] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    clean = tmp_path / "clean.npz"
    np.savez(clean, **small)
    prot = tmp_path / "prot.npz"
    np.savez(prot, train_images=np.clip(small["train_images"].astype(int) + 8, 0, 255).astype(np.uint8),
             train_labels=small["train_labels"])
    rc = cli_main(["evaluate", "--protected", str(prot), "--clean", str(clean), "--arch", "cnn", "--epochs", "1", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for part in ("protected", "clean"):
        for when in ("final", "peak"):
            assert set(doc[part][when]) == {"acc", "balanced_acc", "auc"}
            assert 0 <= doc[part][when]["auc"] <= 1
    assert doc["arch"] == "cnn" and doc["train_samples"] == 40
    assert doc["verdict"]["verdict"] in ("protected", "partly protected", "not protected")
    rc = cli_main(["evaluate", "--protected", str(tmp_path / "nope.npz"), "--clean", str(clean)])
    assert rc == 2
    assert "nope.npz" in capsys.readouterr().err


@pytest.mark.slow
def test_protected_breastmnist_is_clearly_worse_than_clean(medmnist_dir):
    """The real-data check: the SALM default on BreastMNIST's training split (546 images), against the
    earlier thief WITHOUT augmentation. Against the realistic thief suite (crop + flip) the protection
    does not hold; see docs/benchmarks.md, "Efficacy against the realistic thief suite"."""
    npz = medmnist_dir / "breastmnist.npz"
    series = medmnist_series(npz, "train")
    with np.load(npz) as z:
        train = (z["train_images"], z["train_labels"])
        test = (z["test_images"], z["test_labels"])
    result = protect_series([series], ProtectSettings())
    prot = np.stack([result.protected(series.id, i) for i in range(len(series.samples))]).astype(np.uint8)
    assert result.summary["fraction_pixels_changed"] <= round(0.2 * 784) / 784 + 1e-9
    assert np.abs(prot.astype(int) - train[0].astype(int)).max() <= 8
    res = evaluate_efficacy((prot, train[1]), train, test, arch="cnn", epochs=15, seed=0)
    clean, clean_peak, protected = res["clean"]["final"], res["clean"]["peak"], res["protected"]["final"]
    print(json.dumps({"clean": clean, "protected": protected, "summary": result.summary}, default=str))
    assert clean_peak["balanced_acc"] >= 0.75 and clean_peak["auc"] >= 0.85  # the recipe itself works
    assert protected["balanced_acc"] <= clean_peak["balanced_acc"] - 0.15
    assert protected["auc"] <= clean["auc"] - 0.15
