"""Countermeasures benchmark (issue 7): does the protection survive what a thief would do?

For each dataset and protection method (SALM with the engine's current defaults, EM, random noise;
optionally SALM with the robust generation option) the training split is protected once and cached;
then for every defense (none, augment, blur, median, jpeg75, jpeg10, bitdepth, advtrain) a fresh
attacker is trained on the defended protected split, and the same defense on the clean split
(the thief pays for it too). Reported: balanced accuracy and AUC on the clean test split, final and
peak over epochs.

One command (BreastMNIST full grid and a reduced PneumoniaMNIST grid, about an hour on 2 busy cores):

    python benchmarks/countermeasures.py

Options: --datasets, --methods (salm = the engine's current default, em, random; also salm-sample,
salm-never, salm-robust, salm-robust-pgd, see METHODS), --defenses, --reduced DATASET=d1,d2 (defence
list and order per dataset), --subset DATASET=N, --epochs / --epochs-by DATASET=N, --arch,
--skip-clean (a second process adding methods), --table-only (assemble the table from the cache).
The robust rows of docs/benchmarks.md:

    python benchmarks/countermeasures.py --datasets breastmnist --methods salm-robust,salm-robust-pgd --skip-clean

The cache key is dataset, method label, subset and seed; delete benchmarks/results/countermeasures/
after the engine's defaults change. Protected training splits are cached under benchmarks/results/countermeasures/
(git-ignored) as npz files, and every finished cell as a JSON file, so a rerun (or a run that was
interrupted) only computes what is missing. The markdown table goes to stdout, all cells to
benchmarks/results/countermeasures-<stamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salm_desktop.core.evaluate import medmnist_series, train_and_test  # noqa: E402
from salm_desktop.core.evaluate.defenses import DEFENSES  # noqa: E402
from salm_desktop.core.model import IntensityMap  # noqa: E402
from salm_desktop.core.protect import ProtectSettings, protect_series  # noqa: E402

DATA = Path(os.environ.get("SALM_TEST_DATA", REPO.parent / "shared" / "data")) / "medmnist"
RESULTS = REPO / "benchmarks" / "results"
CACHE = RESULTS / "countermeasures"

METHODS = {  # label -> ProtectSettings overrides on top of the engine's defaults
    "salm": {"method": "salm"},
    "em": {"method": "em"},
    "random": {"method": "random"},
    # earlier SALM defaults and the robust variants (measured against salm-sample):
    "salm-sample": {"method": "salm", "mask_scope": "sample"},  # each sample's own mask, recomputed every step
    "salm-never": {"method": "salm", "mask_scope": "sample", "recompute_mask": "never"},  # mask fixed after step 1
    "salm-robust": {"method": "salm", "mask_scope": "sample", "robust": True},  # EOT in surrogate training and PGD
    "salm-robust-pgd": {"method": "salm", "mask_scope": "sample", "robust": "pgd"},  # EOT in PGD only, half untransformed
}


def _key(name: str, method: str, subset: int | None, seed: int) -> str:
    return f"{name}_{method}_n{subset or 'all'}_s{seed}"


def protected_train(name: str, method: str, subset: int | None, seed: int, device: str) -> tuple[np.ndarray, dict]:
    """The protected training split (uint8) of ``name``, generated once and cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{_key(name, method, subset, seed)}.npz"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        with np.load(path) as z:
            return z["train_images"], json.loads(meta_path.read_text())
    series = medmnist_series(DATA / f"{name}.npz", "train", n=subset)
    n = len(series.samples)
    clean = np.stack([s.read() for s in series.samples])
    settings = ProtectSettings(**{**METHODS[method], "seed": seed, "device": device})
    t0 = time.perf_counter()
    result = protect_series([series], settings)
    seconds = time.perf_counter() - t0
    prot = np.stack([result.protected(series.id, i) for i in range(n)])
    assert np.abs(prot - clean).max() <= 255 * settings.epsilon + 1e-3, "budget exceeded"
    prot = prot.astype(np.uint8)
    meta = {"method": method, "seconds": round(seconds, 1), "rounds": result.summary["rounds"],
            "fraction_pixels_changed": round(result.summary["fraction_pixels_changed"], 4),
            "surrogate_accuracy": result.summary["surrogate_accuracy"],
            "settings": {k: v for k, v in settings.as_dict().items() if k != "device"}}
    np.savez_compressed(path, train_images=prot)
    meta_path.write_text(json.dumps(meta, indent=1))
    print(f"# protected {name} with {method}: {meta}", file=sys.stderr, flush=True)
    return prot, meta


def cell(name: str, method: str, defense: str, subset: int | None, seed: int, epochs: int, arch: str,
         device: str) -> dict:
    """Attacker metrics for one (dataset, training data, defense); cached as JSON. method 'clean' = no protection."""
    path = CACHE / "cells" / f"{_key(name, method, subset, seed)}_{defense}_{arch}_e{epochs}.json"
    if path.exists():
        return json.loads(path.read_text())
    with np.load(DATA / f"{name}.npz") as z:
        test = (z["test_images"], z["test_labels"])
        train = (z["train_images"][:subset], z["train_labels"][:subset])
    meta: dict = {}
    if method != "clean":
        images, meta = protected_train(name, method, subset, seed, device)
        train = (images, train[1])
    t0 = time.perf_counter()
    res = train_and_test(train, test, arch, epochs, seed, IntensityMap.for_uint8(),
                         None if defense == "none" else defense, device=device)
    out = {"dataset": name, "method": method, "defense": defense, "arch": arch, "epochs": epochs, "seed": seed,
           "train_images": int(len(train[0])), "final": res["final"], "peak": res["peak"],
           "seconds": round(time.perf_counter() - t0, 1), "protection": meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("dataset", "method", "defense", "final", "peak", "seconds")}), file=sys.stderr, flush=True)
    return out


def _fmt(c: dict | None) -> str:
    if c is None:
        return "–"
    f, p = c["final"], c["peak"]
    return f"{f['balanced_acc']:.2f}/{p['balanced_acc']:.2f} · {f['auc']:.2f}/{p['auc']:.2f}"


def markdown(cells: list[dict], datasets: list[str], methods: list[str], defenses: list[str], header: str) -> str:
    idx = {(c["dataset"], c["method"], c["defense"]): c for c in cells}
    lines = [header, ""]
    for name in datasets:
        n = next((c["train_images"] for c in cells if c["dataset"] == name), "?")
        lines += [f"**{name}** ({n} training images). Each cell: balanced accuracy final/peak · AUC final/peak "
                  "on the clean test split (lower = better protection; chance 0.50).", ""]
        cols = ["defense", "clean (thief's cost)"] + methods
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for d in defenses:
            if not any((name, m, d) in idx for m in ["clean", *methods]):
                continue
            lines.append("| " + " | ".join([d, _fmt(idx.get((name, "clean", d)))] + [_fmt(idx.get((name, m, d))) for m in methods]) + " |")
        prot = [(m, next((c["protection"] for c in cells if c["dataset"] == name and c["method"] == m and c["protection"]), None))
                for m in methods]
        lines += ["", "Generation: " + "; ".join(
            f"{m} {p['seconds']:.0f} s, {p['rounds']} rounds, {100 * p['fraction_pixels_changed']:.1f} % pixels changed"
            for m, p in prot if p) + ".", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="breastmnist,pneumoniamnist")
    ap.add_argument("--methods", default="salm,em,random", help=f"comma-separated from {', '.join(METHODS)}")
    ap.add_argument("--defenses", default=",".join(DEFENSES), help="comma-separated defense names (see --reduced)")
    ap.add_argument("--reduced", default="breastmnist=none,jpeg10,blur,median,bitdepth,augment,advtrain,jpeg75;pneumoniamnist=none,jpeg10,blur,median",
                    help="DATASET=defenses;... : a smaller defense list (in this order) for some datasets (time)")
    ap.add_argument("--subset", default="pneumoniamnist=1000", help="DATASET=N;... : only the first N training images")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--epochs-by", default="pneumoniamnist=10", help="DATASET=N;... : other epochs for some datasets")
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--table-only", action="store_true", help="only assemble the table from cached cells")
    ap.add_argument("--skip-clean", action="store_true", help="do not train on clean data (e.g. a second process adding a method)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    def mapping(spec: str) -> dict[str, str]:
        return dict(kv.split("=", 1) for kv in spec.split(";") if "=" in kv)

    subsets = {k: int(v) for k, v in mapping(args.subset).items()}
    reduced = {k: v.split(",") for k, v in mapping(args.reduced).items()}
    epochs_by = {k: int(v) for k, v in mapping(args.epochs_by).items()}
    datasets = args.datasets.split(",")
    methods = args.methods.split(",")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    defenses_all = args.defenses.split(",")
    t0 = time.perf_counter()
    cells = []
    for name in datasets:
        defenses = [d for d in reduced.get(name, defenses_all) if d in defenses_all]
        epochs = epochs_by.get(name, args.epochs)
        for d in defenses:
            for m in ([] if args.skip_clean and not args.table_only else ["clean"]) + methods:
                path = CACHE / "cells" / f"{_key(name, m, subsets.get(name), args.seed)}_{d}_{args.arch}_e{epochs}.json"
                if args.table_only:
                    if path.exists():
                        cells.append(json.loads(path.read_text()))
                    continue
                cells.append(cell(name, m, d, subsets.get(name), args.seed, epochs, args.arch, args.device))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/countermeasures.py " + " ".join(sys.argv[1:])
    header = (f"#### Run {stamp}\n\n`{cmd}`  \n{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
              f"device {args.device}; attacker {args.arch}, {args.epochs} epochs {epochs_by or ''} (Adam 1e-3, batch 32), seed {args.seed}; "
              f"subsets {subsets or 'none'}; {time.perf_counter() - t0:.0f} s (cached cells are not recomputed).")
    print(markdown(cells, datasets, methods, defenses_all, header))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"countermeasures-{stamp.replace(' ', '_').replace(':', '')}.json").write_text(json.dumps(cells, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
