"""Clinical utility (issue 13): the hospital's model, trained on the CLEAN training split, on clean
versus protected test images (protected with the default settings).

    python -m salm_desktop.cli protect ../shared/data/medmnist/breastmnist.npz --out /tmp/bm --splits test --no-report
    python benchmarks/clinical_utility.py --clean ../shared/data/medmnist/breastmnist.npz --protected /tmp/bm/breastmnist.npz

    ... --augment texture   # the hospital's model trained to ignore the protection's textures

Prints one JSON object: AUC / balanced accuracy on both, the AUC change, identical predictions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salm_desktop.core.evaluate import load_split
from salm_desktop.core.evaluate.utility import evaluate_utility
from salm_desktop.core.protect.salm_texture import unlabelled_textures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", type=Path, required=True)
    ap.add_argument("--protected", type=Path, required=True, help="npz whose test split was protected")
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", default="standard", choices=["standard", "texture"],
                    help="texture: the hospital's model also sees random protection textures (label-independent)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = evaluate_utility(load_split(args.clean, "train"), load_split(args.clean, "test"),
                           load_split(args.protected, "test"), arch=args.arch, epochs=args.epochs, seed=args.seed,
                           augment=args.augment, textures=unlabelled_textures if args.augment == "texture" else None)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
