"""Does restricting the perturbation to the body (foreground=True) help or hurt protection? (issue 13)

BreastMNIST training split protected with the defaults, once with foreground=False and once with
foreground=True (the one body mask, protect.masks.body_mask); a cnn thief with crop-and-flip
augmentation ("augment") trained on each, tested on the clean test split.

    python benchmarks/foreground_choice.py [--dataset breastmnist] [--epochs 15] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salm_desktop.core.evaluate import evaluate_efficacy, load_split, medmnist_series  # noqa: E402
from salm_desktop.core.protect import ProtectSettings, protect_series  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    npz = REPO / ".." / "shared" / "data" / "medmnist" / f"{args.dataset}.npz"
    clean_test = load_split(npz, "test")
    rows = []
    for foreground in (False, True):
        series = medmnist_series(npz, "train")
        result = protect_series([series], ProtectSettings(foreground=foreground, seed=args.seed, device="cpu"))
        images = np.stack([result.protected(series.id, i) for i in range(len(series.samples))]).round().astype(np.uint8)
        labels = np.array(series.labels)
        ev = evaluate_efficacy((images, labels), None, clean_test, arch="cnn", epochs=args.epochs, seed=args.seed,
                               defense="augment")
        rows.append({"foreground": foreground, "rounds": result.summary["rounds"],
                     "fraction_changed": result.summary["fraction_pixels_changed"],
                     "final": ev["protected"]["final"], "peak": ev["protected"]["peak"]})
        result.close()
        print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
