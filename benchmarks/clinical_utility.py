"""Clinical utility (issue 13): the hospital's model, trained on the CLEAN training split, on clean
versus protected test images (protected with the default settings).

    python -m salm_desktop.cli protect ../shared/data/medmnist/breastmnist.npz --out /tmp/bm --splits test --no-report
    python benchmarks/clinical_utility.py --clean ../shared/data/medmnist/breastmnist.npz --protected /tmp/bm/breastmnist.npz

    ... --augment texture       # the hospital's model trained to ignore the protection's textures
    ... --augment consistency   # ... trained on every image and a textured copy to give the same answer
    ... --noise-floor           # the same model on the test images with unstructured noise of the same budget
    ... --split val             # compare on the val split (choosing settings without the test split)

Prints one JSON object: AUC / balanced accuracy on both, the AUC change, identical predictions.
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

from salm_desktop.core.evaluate import load_split
from salm_desktop.core.evaluate import utility
from salm_desktop.core.evaluate.utility import evaluate_utility
from salm_desktop.core.protect.salm_texture import unlabelled_textures


def unstructured_noise(clean: np.ndarray, protected: np.ndarray, seed: int) -> np.ndarray:
    """8-bit test images with +-8 grey levels (random sign) on a random share of the pixels equal to the share the
    protection changed: the same budget with no structure at all."""
    if clean.dtype != np.uint8:
        raise SystemExit("--noise-floor is for 8-bit images")
    rng = np.random.default_rng(1000 + seed)
    share = float(np.mean(clean != protected))
    noise = np.where(rng.random(clean.shape) < share, rng.choice([-8, 8], clean.shape), 0)
    return np.clip(clean.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", type=Path, required=True)
    ap.add_argument("--protected", type=Path, required=True, help="npz whose test split was protected")
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", default="standard", choices=["standard", "texture", "consistency"],
                    help="texture: the hospital's model also sees random protection textures (label-independent); "
                         "consistency: every image and a textured copy, asked to give the same answer")
    ap.add_argument("--consistency-weight", type=float, default=None, help="weight of the agreement term (default: "
                    "utility.CONSISTENCY_WEIGHT)")
    ap.add_argument("--consistency-noise", type=float, default=None, help="share of the textured copy's pixels that "
                    "also get unstructured +-epsilon noise (default: utility.CONSISTENCY_NOISE_SHARE)")
    ap.add_argument("--split", default="test", help="which split of --protected to compare (val: choose settings "
                    "without looking at the test split)")
    ap.add_argument("--noise-floor", action="store_true", help="also compare the same model on the clean images with "
                    "unstructured noise (+-8 grey levels, random sign, on as many pixels as the protection changed)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.consistency_weight is not None:
        utility.CONSISTENCY_WEIGHT = args.consistency_weight
    if args.consistency_noise is not None:
        utility.CONSISTENCY_NOISE_SHARE = args.consistency_noise
    clean_test, protected_test = load_split(args.clean, args.split), load_split(args.protected, args.split)
    others = {"random_noise": unstructured_noise(clean_test[0], protected_test[0], args.seed)} if args.noise_floor else None
    res = evaluate_utility(load_split(args.clean, "train"), clean_test, protected_test, arch=args.arch,
                           epochs=args.epochs, seed=args.seed, augment=args.augment,
                           textures=unlabelled_textures if args.augment != "standard" else None, other_versions=others)
    res.update(split=args.split, consistency_weight=utility.CONSISTENCY_WEIGHT,
               consistency_noise_share=utility.CONSISTENCY_NOISE_SHARE)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
