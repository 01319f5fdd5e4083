"""Which class-texture frequencies does a clean-trained model ignore? (issue 13, clinical utility)

The texture of the default protection moves the hospital's clean-trained model (docs/benchmarks.md,
"Why the texture moves a clean-trained model": the response is even in the texture, so only the
frequency and the placement can change it). This scan puts every candidate frequency, alone, on the
default salient 30 % mask of the test images at 8/255 and measures how much two clean models react:

* the protector's own clean surrogate (``clean_surrogate_setup``, what the product has at protection
  time) and a hospital-like model of the protector's (the hospital's recipe, seed 1), which are
  allowed to choose the frequencies, and
* the hospital's models (``train_clean_model``: cnn, crop and flip, 15 epochs, seeds 0 and 2; seed 0
  is the model of ``salm-protect evaluate --utility``), which only evaluate the choice.

Per class and frequency: mean |change of the predicted probability| of class 1 and the number of
predictions that change. Then the pair (one frequency per class, distinct) with the smallest response
of each chooser is evaluated on the hospital's models next to the default pair.

    python benchmarks/utility_frequency_scan.py breastmnist
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.utility_placement import hospital_setup  # noqa: E402
from salm_desktop.core.evaluate.utility import compare_predictions, predict  # noqa: E402
from salm_desktop.core.protect.masks import topk_mask  # noqa: E402
from salm_desktop.core.protect.peers import _class_saliency, clean_surrogate_setup  # noqa: E402
from salm_desktop.core.protect.salm_texture import class_frequencies, class_textures  # noqa: E402
from salm_desktop.core.protect.settings import ProtectSettings  # noqa: E402

LEVELS = (0.0, 0.25, 1 / 3, 0.42, 0.5)


def main(name: str) -> int:
    train, test, intensity, (hospital, chooser, second), x, y = hospital_setup(name, (0, 1, 2))
    settings = ProtectSettings()
    eps, ratio = settings.epsilon, settings.mask_ratio_for(texture=True)
    _, n_classes, xt, yt, surrogate = clean_surrogate_setup(x, y, settings, None, "cpu")
    score = _class_saliency(surrogate, xt, yt, n_classes, 64)[yt].unsqueeze(1)
    mask = topk_mask(score, ratio, None).squeeze(1).numpy()
    surrogate.eval()
    # the surrogate a protection of the *training* split trains (546 / 4,708 images, not the 156 / 624 test images)
    train_surrogate = clean_surrogate_setup(train[0].astype(np.float32) / 255.0, train[1].reshape(-1).astype(np.int64),
                                            settings, None, "cpu")[-1].eval()

    def margin(model, images: np.ndarray) -> np.ndarray:
        """logit of class 1 minus the mean logit: unlike a probability it does not saturate for a confident model"""
        with torch.no_grad():
            z = model(torch.from_numpy(images).float().unsqueeze(1)).double()
        return (z[:, 1] - z.mean(1)).numpy()

    def surrogate_probs(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(surrogate(torch.from_numpy(images).float().unsqueeze(1)), 1).numpy()

    def textured(freq_per_class) -> np.ndarray:
        tex = class_textures(x.shape, y, np.random.default_rng(int(settings.seed) + 17), freq_per_class)
        return np.clip(np.rint((x + tex * eps * mask) * 255), 0, 255).astype(np.uint8)

    clean_h = predict(hospital, test[0], intensity)
    clean_2 = predict(second, test[0], intensity)
    clean_c = predict(chooser, test[0], intensity)
    clean_s = surrogate_probs(x)
    clean_m = margin(surrogate, x)
    clean_t = margin(train_surrogate, x)
    cands = [(a, b) for a in LEVELS for b in LEVELS if (a, b) != (0.0, 0.0)]
    rows = []
    for f in cands:
        images = textured([f] * n_classes)  # every class gets f: the per-class response is read per class below
        ph, ps = predict(hospital, images, intensity), surrogate_probs(images.astype(np.float32) / 255.0)
        pc = predict(chooser, images, intensity)
        mm = margin(surrogate, images.astype(np.float32) / 255.0)
        mt = margin(train_surrogate, images.astype(np.float32) / 255.0)
        row = {"f": [round(v, 3) for v in f]}
        for c in range(n_classes):
            sel = y == c
            row[f"surrogate_dp_{c}"] = round(float(np.abs(ps[sel, 1] - clean_s[sel, 1]).mean()), 4)
            row[f"surrogate_margin_dp_{c}"] = round(float(np.abs(mm[sel] - clean_m[sel]).mean()), 4)
            row[f"train_surrogate_margin_dp_{c}"] = round(float(np.abs(mt[sel] - clean_t[sel]).mean()), 4)
            row[f"chooser_dp_{c}"] = round(float(np.abs(pc[sel, 1] - clean_c[sel, 1]).mean()), 4)
            row[f"hospital_dp_{c}"] = round(float(np.abs(ph[sel, 1] - clean_h[sel, 1]).mean()), 4)
            row[f"hospital_flips_{c}"] = int((ph[sel].argmax(1) != clean_h[sel].argmax(1)).sum())
        rows.append(row)
        print(json.dumps(row), flush=True)
    def least(kind: str) -> list:
        cost = np.array([[r[f"{kind}_dp_{c}"] for c in range(n_classes)] for r in rows])
        best = min(itertools.permutations(range(len(cands)), n_classes), key=lambda a: sum(cost[j, c] for c, j in enumerate(a)))
        return [cands[j] for j in best]

    for label, pair in (("default", class_frequencies(n_classes)), ("surrogate's least-response pair", least("surrogate")),
                        ("surrogate's least-margin-response pair", least("surrogate_margin")),
                        ("training-split surrogate's least-margin-response pair", least("train_surrogate_margin")),
                        ("hospital-like model's (seed 1) least-response pair", least("chooser"))):
        images = textured(pair)
        out = {"pair": label, "frequencies": [[round(v, 3) for v in f] for f in pair]}
        for tag, model, clean in (("hospital seed 0", hospital, clean_h), ("hospital seed 2", second, clean_2)):
            r = compare_predictions(clean, predict(model, images, intensity), y)
            out[tag] = {"identical": round(r["identical_predictions"], 4), "changed": r["changed_predictions"],
                        "auc_change": round(r["auc_change"], 4)}
        print(json.dumps(out), flush=True)
    rank = lambda v: np.argsort(np.argsort(v))
    hos = np.array([[r[f"hospital_dp_{c}"] for c in range(n_classes)] for r in rows]).ravel()
    for kind in ("surrogate", "surrogate_margin", "train_surrogate_margin", "chooser"):
        other = np.array([[r[f"{kind}_dp_{c}"] for c in range(n_classes)] for r in rows]).ravel()
        print(json.dumps({f"spearman {kind} vs hospital seed 0 (per class and frequency)":
                          round(float(np.corrcoef(rank(other), rank(hos))[0, 1]), 3)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "breastmnist"))
