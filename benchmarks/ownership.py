"""Ownership-key benchmark (issue 14): are thieves trained on a keyed release detected, and innocent models not?

Per dataset: protect the training split once (SALM defaults, seed 0), then for every thief model a
fresh key set marks that protected split (the product's own code: MarkedResult, KEYDIR written by
write_release_keys); the thief trains on it with its countermeasure; its answers to the KEYDIR
queries go through ``verify`` (TorchScript model, the same code as ``salm-protect verify --model``).
Innocent models are trained on the clean split (augmentation on) and tested against fresh key sets
of this dataset; the thieves of the *other* dataset count as innocent models too (trained on other
data). Accuracy cost: thieves on the keyed release against thieves on the same release without keys.

    python benchmarks/ownership.py --dataset breastmnist --threads 1
    python benchmarks/ownership.py --dataset pneumoniamnist --subset 800 --threads 1
    python benchmarks/ownership.py --collect          # innocent tests across datasets + the table

Each run writes benchmarks/results/ownership/<dataset>.json and the TorchScript models it trained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salm_desktop.core.evaluate import medmnist_series  # noqa: E402
from salm_desktop.core.evaluate.efficacy import classification_metrics  # noqa: E402
from salm_desktop.core.model import IntensityMap  # noqa: E402
from salm_desktop.core.ownership.keydir import read_keydir  # noqa: E402
from salm_desktop.core.ownership.keys import make_keys  # noqa: E402
from salm_desktop.core.ownership.release import MarkedResult, write_release_keys  # noqa: E402
from salm_desktop.core.ownership.stats import centered_ranks, score_test  # noqa: E402
from salm_desktop.core.ownership.shadow import predict, to_tensor, train_model, train_suite_thief  # noqa: E402
from salm_desktop.core.ownership.verify import answers_from_model, evaluate  # noqa: E402
from salm_desktop.core.protect import ProtectSettings, protect_series  # noqa: E402

DATA = Path(os.environ.get("SALM_TEST_DATA", REPO.parent / "shared" / "data")) / "medmnist"
OUT = REPO / "benchmarks" / "results" / "ownership"

# (arch or suite recipe, defense) of every thief; augmentation (random crop + flip) is always on. "cnn"/"resnet":
# the shadow thief (Adam, 15 epochs, 2-pixel crop); "ARCH-OPT-aug": the realistic suite of core/evaluate/thieves.py
# (20 epochs, 4-pixel crop). Interleaved, so that a run stopped early still has every recipe.
THIEVES = [("resnet18-sgd-aug", "augment"), ("cnn-sgd-aug", "augment"), ("vgg-sgd-aug", "augment"), ("cnn", "augment"),
           ("resnet18-sgd-aug", "jpeg10+augment"), ("cnn-sgd-aug", "median+augment"), ("resnet18-adam-aug", "augment"),
           ("cnn-sgd-aug", "augment"), ("cnn", "jpeg10+augment"), ("resnet18-sgd-aug", "median+augment"),
           ("vgg-sgd-aug", "augment"), ("resnet18-sgd-aug", "augment")]


def train_thief(images: np.ndarray, labels: np.ndarray, arch: str, defense: str, seed: int, epochs: int):
    """The shadow thief for "cnn"/"resnet", a suite thief for "ARCH-OPT-aug" (its dataset-level defense first)."""
    if "-" in arch:
        dataset_level = "+".join(p for p in defense.split("+") if p not in ("augment", "none")) or None
        return train_suite_thief(images, labels, arch, seed=seed, defense=dataset_level)
    return train_model(images, labels, arch=arch, epochs=epochs, seed=seed, defense=defense)


class CachedProtection:
    """A protected split saved by an earlier run of this benchmark (same data, settings and seed)."""

    def __init__(self, protected: np.ndarray, series_id: str, labels: np.ndarray) -> None:
        self.array, self.series_id, self.labels = protected, series_id, [int(v) for v in labels]
        self.summary: dict = {}

    def protected(self, series_id: str, index: int) -> np.ndarray:
        return self.array[index].astype(np.float32)

    def protected_from(self, series_id: str, index: int, original: np.ndarray) -> np.ndarray:
        return self.protected(series_id, index)

    def labels_used(self, series_id: str) -> list[int]:
        return self.labels

    def close(self) -> None:
        pass


def psnr_mean(orig: np.ndarray, new: np.ndarray) -> float:
    mse = np.mean((orig.astype(np.float64) - new.astype(np.float64)) ** 2, axis=(1, 2))
    finite = mse[mse > 0]
    return float(np.mean(10 * np.log10(255.0**2 / finite))) if finite.size else float("inf")


def save_model(model: torch.nn.Module, path: Path, shape: tuple[int, int]) -> Path:
    traced = torch.jit.trace(model, torch.zeros(2, 1, *shape))
    traced.save(str(path))
    return path


def run_dataset(name: str, subset: int | None, epochs: int, seed: int, thieves: list[tuple[str, str]], n_clean: int,
                n_cost: int, tag: str = "", train_thieves: bool = True) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    models_dir = OUT / "models"
    models_dir.mkdir(exist_ok=True)
    npz = DATA / f"{name}.npz"
    series = medmnist_series(npz, "train", subset)
    with np.load(npz) as z:
        x_clean = z["train_images"][: len(series.samples)]
        y = z["train_labels"][: len(series.samples), 0]
        x_test, y_test = z["test_images"], z["test_labels"][:, 0]
    shape = tuple(x_clean.shape[1:])
    settings = ProtectSettings(seed=seed, device="cpu")
    cache = OUT / f"{name}_{subset or 'all'}_seed{seed}_protected.npz"
    if cache.is_file():  # protecting again gives the same pixels (same code, settings, seed, 1 thread)
        with np.load(cache) as z:
            unmarked, protect_s = z["images"], float(z["seconds"])
        result = CachedProtection(unmarked, series.id, y)
    else:
        t0 = time.perf_counter()
        result = protect_series([series], settings)
        protect_s = time.perf_counter() - t0
        unmarked = np.stack([result.protected(series.id, i) for i in range(len(series.samples))]).astype(np.uint8)
        np.savez(cache, images=unmarked, seconds=protect_s)
    intensity = IntensityMap.for_uint8()
    x_te = to_tensor(x_test, intensity)
    out: dict = {"dataset": name, "train_samples": len(y), "epochs": epochs, "seed": seed,
                 "protect_seconds": round(protect_s, 1), "psnr_protected": psnr_mean(x_clean, unmarked),
                 "fraction_changed_protected": float(np.mean(unmarked != x_clean)), "thieves": [], "clean": [], "cost": []}

    def test_metrics(model) -> dict:
        return classification_metrics(predict(model, x_te).astype(np.float64), y_test)

    for i, (arch, defense) in enumerate(thieves if train_thieves else []):
        key_seed = 10_000 * (seed + 1) + i + (500 if tag else 0)  # reproducible here; the product draws a fresh OS seed
        t1 = time.perf_counter()
        keys = make_keys(shape, 2, seed=key_seed)
        marked_result = MarkedResult(result, keys, [series], settings.epsilon)
        marked = np.stack([marked_result.protected(series.id, j) for j in range(len(y))]).astype(np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Path(tmp) / "manifest.json"
            manifest.write_text(json.dumps({"benchmark": name, "key_seed": key_seed}))
            keydir = write_release_keys(Path(tmp) / "keys", keys, [series], manifest)
            key_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            model = train_thief(marked, y, arch, defense, seed + i, epochs)
            train_s = time.perf_counter() - t2
            path = save_model(model, models_dir / f"{name}_thief{tag}{i}.pt", shape)
            record = read_keydir(keydir)
            res = evaluate(record, answers_from_model(path, record), test="labels")
            res_scores = evaluate(record, answers_from_model(path, record), test="scores")
        row = {"i": i, "arch": arch, "defense": defense, "key_seed": key_seed, "p_labels": res["p_value"], "hits": res["hits"],
               "keys": res["keys"], "p_scores": res_scores["p_value"], "key_seconds": round(key_s, 2),
               "train_seconds": round(train_s, 1), "psnr_marked": psnr_mean(x_clean, marked),
               "fraction_changed_marked": float(np.mean(marked != x_clean)), **{f"test_{k}": v for k, v in test_metrics(model).items()}}
        out["thieves"].append(row)
        print(json.dumps(row), flush=True)
        _save(out, name + tag)
    for i in range(n_cost):  # the same thieves on the release without keys: the accuracy cost of the mark
        arch, defense = thieves[i]
        model = train_thief(unmarked, y, arch, defense, seed + i, epochs)
        row = {"i": i, "arch": arch, "defense": defense, **{f"test_{k}": v for k, v in test_metrics(model).items()}}
        out["cost"].append(row)
        print(json.dumps({"cost": row}), flush=True)
        _save(out, name + tag)
    for i in range(n_clean):  # innocent: clean data, augmentation on
        model = train_model(x_clean, y, arch="cnn", epochs=epochs, seed=seed + 100 + i, defense="augment")
        save_model(model, models_dir / f"{name}_clean{tag}{i}.pt", shape)
        row = {"i": i, **{f"test_{k}": v for k, v in test_metrics(model).items()}}
        out["clean"].append(row)
        print(json.dumps({"clean": row}), flush=True)
        _save(out, name + tag)
    result.close()
    _save(out, name + tag)
    return out


def _save(out: dict, name: str) -> None:
    (OUT / f"{name}.json").write_text(json.dumps(out, indent=1))


def collect(datasets: list[str], subset: dict[str, int | None]) -> dict:
    """Innocent tests: every clean model of every dataset and every thief of the *other* datasets, each against a
    fresh key set of this dataset (queries built on this dataset's images)."""
    summary = {}
    for name in datasets:
        if not (OUT / f"{name}.json").is_file():
            continue
        res = json.loads((OUT / f"{name}.json").read_text())
        extra = OUT / f"{name}_nodefense.json"
        res["nodefense"] = json.loads(extra.read_text())["thieves"] if extra.is_file() else []
        second = OUT / f"{name}_clean.json"  # cost and clean models from a second process (--no-thieves --tag _clean)
        if second.is_file():
            more = json.loads(second.read_text())
            res["cost"] = res.get("cost", []) + more["cost"]
            res["clean"] = res.get("clean", []) + more["clean"]
        series = medmnist_series(DATA / f"{name}.npz", "train", subset.get(name))
        shape = tuple(series.samples[0].shape)
        # innocent of this release: clean models of every dataset, thieves of the other dataset; and, as a
        # second null check, this dataset's own thieves (trained on a release with *other* keys)
        models = sorted((OUT / "models").glob("*.pt"))
        innocent = [p for p in models if "_clean" in p.name or not p.name.startswith(f"{name}_")]
        other_keys = [p for p in models if p.name.startswith(f"{name}_thief")]
        rows = []
        for n, path in enumerate(innocent + other_keys):
            keys = make_keys(shape, 2, seed=900_000 + 1000 * datasets.index(name) + n)
            rows.append({"model": path.name, **_test_model(path, keys, series),
                         "kind": "other keys" if path in other_keys else "innocent"})
        for tag, row in [("", r) for r in res["thieves"]] + [("_nodefense", r) for r in res["nodefense"]]:
            # again with the final verify code (one statistic for every row)
            row.update(_test_model(OUT / "models" / f"{name}_thief{tag}{row['i']}.pt", make_keys(shape, 2, seed=row["key_seed"]),
                                   series))
        res["innocent"] = rows
        _save(res, name)
        summary[name] = _summarize(res)
    return summary


def _test_model(path: Path, keys, series) -> dict:
    """verify's label and score tests of a saved model against ``keys`` (KEYDIR written and read by the product),
    and the version-1 score statistic (summed differences, no ranks) for comparison."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.json"
        manifest.write_text(json.dumps({"model": path.name, "key_seed": keys.seed}))
        record = read_keydir(write_release_keys(Path(tmp) / "keys", keys, [series], manifest))
        answers = answers_from_model(path, record)
    lab, sco = evaluate(record, answers, test="labels"), evaluate(record, answers, test="scores")
    sums = np.zeros((record.count, record.n_classes))
    net = np.zeros((record.count, record.n_classes))  # top-1 answers only: + answers minus - answers per class
    for qid, key, sign in zip(record.query_ids, record.query_keys, record.query_signs):
        sums[key] += sign * answers.scores[qid]
        net[key, answers.labels[qid]] += sign
    return {"p_labels": lab["p_value"], "p_scores": sco["p_value"], "p_scores_sum": score_test(sums, record.labels),
            "p_label_ranks": score_test(centered_ranks(net), record.labels), "hits": lab["hits"], "keys": lab["keys"]}


def _summarize(res: dict) -> dict:
    def rate(rows, key, alpha):
        return f"{sum(r[key] <= alpha for r in rows)}/{len(rows)}"

    groups = {}
    archs = sorted({r["arch"] for r in res["thieves"]})
    per_arch = tuple((f"augment, {a}", lambda r, a=a: r["defense"] == "augment" and r["arch"] == a) for a in archs)
    for label, pred in (("all thieves", lambda r: True), ("augment only", lambda r: r["defense"] == "augment"), *per_arch,
                        ("jpeg10+augment", lambda r: r["defense"] == "jpeg10+augment"),
                        ("median+augment", lambda r: r["defense"] == "median+augment")):
        rows = [r for r in res["thieves"] if pred(r)]
        if rows:
            groups[label] = {"labels p<=0.01": rate(rows, "p_labels", 0.01), "scores p<=0.01": rate(rows, "p_scores", 0.01),
                             "scores (sums, v1) p<=0.01": rate(rows, "p_scores_sum", 0.01),
                             "label ranks p<=0.01": rate(rows, "p_label_ranks", 0.01),
                             "median p_scores": float(np.median([r["p_scores"] for r in rows])),
                             "median p_labels": float(np.median([r["p_labels"] for r in rows])),
                             "mean hits/keys": f"{np.mean([r['hits'] for r in rows]):.1f}/{np.mean([r['keys'] for r in rows]):.1f}"}
    if res.get("nodefense"):
        rows = res["nodefense"]
        groups["no defence (extra run)"] = {"labels p<=0.01": rate(rows, "p_labels", 0.01),
                                            "scores p<=0.01": rate(rows, "p_scores", 0.01),
                                            "median p_labels": float(np.median([r["p_labels"] for r in rows])),
                                            "mean hits/keys": f"{np.mean([r['hits'] for r in rows]):.1f}/{np.mean([r['keys'] for r in rows]):.1f}"}
    out = {"thieves": groups, "protect_seconds": res["protect_seconds"],
           "key_seconds_max": max(r["key_seconds"] for r in res["thieves"]),
           "psnr_protected": res["psnr_protected"], "psnr_marked_mean": float(np.mean([r["psnr_marked"] for r in res["thieves"]])),
           "fraction_changed_protected": res["fraction_changed_protected"],
           "fraction_changed_marked": float(np.mean([r["fraction_changed_marked"] for r in res["thieves"]]))}
    for kind in ("innocent", "other keys"):
        rows = [r for r in res.get("innocent", []) if r.get("kind", "innocent") == kind]
        if rows:
            out[f"{kind}: labels p<=0.05"] = rate(rows, "p_labels", 0.05)
            out[f"{kind}: scores p<=0.05"] = rate(rows, "p_scores", 0.05)
            out[f"{kind}: labels p<=0.01"] = rate(rows, "p_labels", 0.01)
            out[f"{kind}: scores p<=0.01"] = rate(rows, "p_scores", 0.01)
    cost = []
    for c in res.get("cost", []):
        t = res["thieves"][c["i"]]
        cost.append({"arch": c["arch"], "defense": c["defense"], "auc without keys": round(c["test_auc"], 3),
                     "auc with keys": round(t["test_auc"], 3), "acc without": round(c["test_acc"], 3), "acc with": round(t["test_acc"], 3)})
    out["accuracy cost"] = cost
    out["clean models auc mean"] = float(np.mean([r["test_auc"] for r in res["clean"]])) if res["clean"] else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["breastmnist", "pneumoniamnist"])
    ap.add_argument("--subset", type=int, default=None, help="first N training images only")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--thieves", type=int, default=len(THIEVES), help=f"how many of the {len(THIEVES)} thief recipes")
    ap.add_argument("--clean", type=int, default=6, help="innocent models trained on clean data")
    ap.add_argument("--cost", type=int, default=2, help="thieves also trained on the release without keys")
    ap.add_argument("--recipes", default=None, help="thieves as arch:defense,... instead of the default list (e.g. cnn:none)")
    ap.add_argument("--tag", default="", help="suffix of the result file and model names (runs with other recipes)")
    ap.add_argument("--no-thieves", action="store_true", help="only the cost and clean models (a second process)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--collect", action="store_true", help="innocent tests and the summary over the finished runs")
    ap.add_argument("--subsets", default="pneumoniamnist=800", help="with --collect: the subsets the runs used")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.collect:
        subset = {k: int(v) for k, v in (s.split("=") for s in args.subsets.split(",") if s)}
        print(json.dumps(collect(["breastmnist", "pneumoniamnist"], subset), indent=1))
        return
    if not args.dataset:
        ap.error("--dataset or --collect")
    thieves = THIEVES if not args.recipes else [tuple(r.split(":")) for r in args.recipes.split(",")]
    run_dataset(args.dataset, args.subset, args.epochs, args.seed, thieves[: args.thieves], args.clean, args.cost, args.tag,
                not args.no_thieves)


if __name__ == "__main__":
    main()
