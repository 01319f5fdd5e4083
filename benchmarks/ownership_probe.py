"""Quick probe of the texture key design (issue 14) on BreastMNIST before the full benchmark.

Marks the cached SALM-protected training split of benchmarks/ownership.py with a fresh key set (the
product's mark_sample, inside the protection's mask), trains one thief, and prints the label and score
tests over the product's queries and per-key sign agreement.

    python benchmarks/ownership_probe.py --defense augment --keys 16 --seed 1 [--where mask|all]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salm_desktop.core.evaluate.efficacy import classification_metrics  # noqa: E402
from salm_desktop.core.ownership.keys import make_keys, mark_sample, sample_rng  # noqa: E402
from salm_desktop.core.ownership.shadow import predict, train_model, train_suite_thief  # noqa: E402
from salm_desktop.core.ownership.stats import binomial_tail, score_test  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--defense", default="augment")
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--keys", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--where", default="mask", choices=["mask", "all", "outside", "replace"])
    ap.add_argument("--per-image", type=int, default=0)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--levels", default=None, help="comma-separated frequency levels instead of the product's")
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--subset", default="all")
    ap.add_argument("--fraction", type=float, default=1.0, help="mark only this fraction of the images (drawn per image)")
    ap.add_argument("--gains", default=None, help="comma-separated query gains instead of the product's")
    args = ap.parse_args()
    torch.set_num_threads(1)
    z = np.load(REPO.parent / "shared" / "data" / "medmnist" / f"{args.dataset}.npz")
    prot = np.load(REPO / "benchmarks" / "results" / "ownership" / f"{args.dataset}_{args.subset}_seed0_protected.npz")["images"]
    n = len(prot)
    x, y = z["train_images"][:n].astype(np.float32), z["train_labels"][:n, 0]
    xt, yt = z["test_images"].astype(np.float32), z["test_labels"][:, 0]
    if args.levels:
        import salm_desktop.core.ownership.keys as K
        K.FREQUENCY_LEVELS = tuple(float(v) for v in args.levels.split(","))
    keys = make_keys((28, 28), 2, args.keys, seed=args.seed, strength=args.strength)
    keys.per_image = args.per_image
    keys.placement = args.where if args.where in ("outside", "replace") else "mask"
    src = np.where(prot == x, x + 1e-3, prot) if args.where == "all" else prot.astype(np.float32)  # "all": every pixel
    chosen = np.random.default_rng([args.seed, 5]).random(n) < args.fraction
    marked = np.stack([mark_sample(src[i], x[i], y[i], keys, 8 / 255, 255.0, 0.0, 255.0, sample_rng(keys, "s", i))
                       if chosen[i] else src[i] for i in range(n)])
    marked = np.rint(marked).astype(np.uint8)
    psnr = lambda a: float(np.mean(10 * np.log10(255.0**2 / np.maximum(1e-9, ((a.astype(float) - x) ** 2).mean((1, 2))))))
    print(f"psnr protected {psnr(prot):.2f} marked {psnr(marked):.2f} changed {np.mean(prot != x):.3f} -> "
          f"{np.mean(marked != x):.3f}", flush=True)
    t = time.time()
    if "-" in args.arch:  # a recipe of the realistic suite, e.g. resnet18-sgd-aug; --defense: its dataset-level part
        ds = "+".join(p for p in args.defense.split("+") if p not in ("augment", "none")) or None
        model = train_suite_thief(marked, y, args.arch, seed=args.seed, defense=ds)
    else:
        model = train_model(marked, y, arch=args.arch, epochs=15, seed=args.seed, defense=args.defense)
    rng = np.random.default_rng(args.seed + 99)
    bases = x[rng.choice(n, 16, replace=False)] / 255.0
    gains = tuple(float(v) for v in args.gains.split(",")) if args.gains else None
    q, info = keys.queries_normalized(bases, gains) if gains else keys.queries_normalized(bases)
    s = predict(model, torch.from_numpy(q).unsqueeze(1))
    k = keys.count
    for g in sorted({i["gain"] for i in info}):
        d = np.zeros((k, 2))
        votes = np.zeros((k, 2))
        for a in range(0, len(info), 2):
            if info[a]["gain"] != g:
                continue
            j = info[a]["key"]
            d[j] += s[a] - s[a + 1]
            if s[a].argmax() != s[a + 1].argmax():
                votes[j, s[a].argmax()] += 1
        inf = (votes.max(1) > votes.min(1))
        hits = int((inf & (votes.argmax(1) == keys.labels)).sum())
        sign = int(((d[:, 1] - d[:, 0] > 0) == (keys.labels == 1)).sum())
        print(f"gain {g}: labels {hits}/{int(inf.sum())} p={binomial_tail(hits, int(inf.sum()), 0.5):.3g} "
              f"score p={score_test(d, keys.labels, draws=4999):.4g} sign {sign}/{k}", flush=True)
    for g in (0.03, 0.06, 0.12):  # is the class mark as a whole learned? score of class 1 with class 1's vs class 0's mark
        m = [np.clip(bases + g * np.stack([keys.class_mark(c, rng) for _ in bases]), 0, 1).astype(np.float32) for c in (0, 1)]
        s0, s1 = (predict(model, torch.from_numpy(v).unsqueeze(1))[:, 1] for v in m)
        print(f"whole mark gain {g}: p1 with mark1 - with mark0 = {np.mean(s1 - s0):+.3f} (of {len(bases)} bases, "
              f"{int(np.sum(s1 > s0))} positive)", flush=True)
    pt = predict(model, torch.from_numpy(xt / 255.0).unsqueeze(1))
    print(f"auc {classification_metrics(pt.astype(np.float64), yt)['auc']:.3f} train {time.time() - t:.0f}s", flush=True)


if __name__ == "__main__":
    main()
