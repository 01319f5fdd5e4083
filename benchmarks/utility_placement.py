"""Where the class texture goes, and what a clean-trained model then answers (issue 13, clinical utility).

The hospital's model (the `cnn` of `salm-protect evaluate --utility`: crop and flip, 15 epochs, seed 0)
is trained on the clean training split; the test split is protected with the class texture of the
default (8/255, 30 % mask) in several placements and frequency pairs, and the model's answers on
clean and protected test images are compared (AUC change, identical predictions, mean change of the
positive-class probability). Also: the same texture with the opposite sign, to tell an odd response
(which a sign choice could cancel) from an even one (it cannot).

    python benchmarks/utility_placement.py breastmnist
    python benchmarks/utility_placement.py pneumoniamnist

The protection side of a placement is measured with benchmarks/efficacy_probe.py (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from salm_desktop.core.evaluate import load_split  # noqa: E402
from salm_desktop.core.evaluate.utility import compare_predictions, predict, train_clean_model  # noqa: E402
from salm_desktop.core.model import IntensityMap  # noqa: E402
from salm_desktop.core.protect.masks import topk_mask  # noqa: E402
from salm_desktop.core.protect.peers import _class_saliency, clean_surrogate_setup  # noqa: E402
from salm_desktop.core.protect.salm_texture import class_textures  # noqa: E402
from salm_desktop.core.protect.settings import ProtectSettings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "medmnist"


def hospital_setup(name: str, seeds: tuple[int, ...] = (0,)):
    """``(train, test, intensity, models, x, y)``: the splits, one hospital model (cnn, crop and flip, 15 epochs) per
    seed trained on the clean training split, the test images in [0, 1] and their labels. One torch thread."""
    torch.set_num_threads(1)
    path = DATA / f"{name}.npz"
    train, test = load_split(path, "train"), load_split(path, "test")
    intensity = IntensityMap.for_uint8()
    models = [train_clean_model(train, "cnn", 15, seed, intensity) for seed in seeds]
    return train, test, intensity, models, test[0].astype(np.float32) / 255.0, test[1].reshape(-1).astype(np.int64)


def main(name: str) -> int:
    train, test, intensity, (hospital,), x, y = hospital_setup(name)
    settings = ProtectSettings()
    eps, ratio = settings.epsilon, settings.mask_ratio_for(texture=True)
    _, n_classes, xt, yt, surrogate = clean_surrogate_setup(x, y, settings, None, "cpu")  # the protector's own
    score = _class_saliency(surrogate, xt, yt, n_classes, 64)[yt].unsqueeze(1)
    masks = {"salient (default)": topk_mask(score, ratio, None).squeeze(1).numpy(),
             "least salient": topk_mask(-score, ratio, None).squeeze(1).numpy()}
    rng = np.random.default_rng(5)
    masks["random per class"] = np.stack([rng.random(x.shape[1:]) < ratio for _ in range(n_classes)])[y]
    clean_probs = predict(hospital, test[0], intensity)

    def report(label: str, delta: np.ndarray) -> None:
        protected = np.clip(np.rint((x + delta) * 255), 0, 255).astype(np.uint8)
        probs = predict(hospital, protected, intensity)
        r = compare_predictions(clean_probs, probs, y)
        print(json.dumps({"variant": label, "identical": round(r["identical_predictions"], 4),
                          "changed": r["changed_predictions"], "auc_change": round(r["auc_change"], 4),
                          "mean_signed_dp1": round(float((probs[:, 1] - clean_probs[:, 1]).mean()), 4),
                          "pixels_changed": round(float(np.mean(protected != test[0])), 3)}), flush=True)

    for freqs in (None, [(0.5, 0.5), (0.0, 0.5)], [(0.5, 0.5), (0.5, 0.0)]):
        texture = class_textures(x.shape, y, np.random.default_rng(int(settings.seed) + 17), freqs)
        for mask_name, mask in masks.items():
            report(f"frequencies {freqs or 'default'}, mask {mask_name}", texture * eps * mask)
        if freqs is None:
            report("frequencies default, mask salient, sign reversed", -texture * eps * masks["salient (default)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "breastmnist"))
