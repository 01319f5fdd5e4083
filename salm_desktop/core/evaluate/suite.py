"""The ``evaluate`` check: every thief of the suite on the protected and on the clean training split."""

from __future__ import annotations

import time

import numpy as np

from .thieves import ThiefRecipe, default_suite, run_thief, summarize
from .verdict import decide

Split = tuple[np.ndarray, np.ndarray]
VAL_HOLDOUT = 0.1  # without a clean val split, this fraction of the clean training split plays the thief's own val data


def _holdout(clean_train: Split, seed: int = 0) -> tuple[Split, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(clean_train[0])
    idx = rng.permutation(n)[:max(2, int(round(VAL_HOLDOUT * n)))]
    return (clean_train[0][idx], clean_train[1][idx]), idx


def evaluate_suite(protected: Split, clean_train: Split, clean_val: Split | None, clean_test: Split,
                   recipes: list[ThiefRecipe] | None = None, seeds: list[int] | tuple[int, ...] = (0,),
                   progress=None) -> dict:
    """Train each recipe (x seed) on the protected and on the clean split; test on ``clean_test``.

    The few-clean refit and the clean mix need the clean originals of the protected images; they
    are used when ``clean_train`` has as many images as ``protected`` (the same split, protected).
    Returns a JSON-ready document with per-thief summaries and the verdict.
    """
    recipes = recipes or default_suite()
    if len(protected[0]) != len(protected[1]):
        raise ValueError("protected training images and labels differ in length")
    val_note = "clean val split"
    if clean_val is None:
        clean_val, _ = _holdout(clean_train)
        val_note = f"{round(100 * VAL_HOLDOUT)} % of the clean training split (no val split given)"
    paired = len(clean_train[0]) == len(protected[0])
    originals = clean_train[0] if paired else None
    t0 = time.perf_counter()
    thieves = {}
    for recipe in recipes:
        if recipe.clean_mix and not paired:
            continue  # mixing clean originals in needs them
        out = {"recipe": recipe.name}
        for part, images, labels, orig in (("protected", protected[0], protected[1], originals),
                                           ("clean", clean_train[0], clean_train[1], clean_train[0])):
            if part == "clean" and recipe.clean_mix:
                continue  # a clean mix of clean data is the clean row
            runs = []
            for seed in seeds:
                cb = None if progress is None else (lambda e, n, m, tag=f"{recipe.name} on {part}, seed {seed}": progress(tag, e, n, m))
                runs.append(run_thief(images, labels, clean_val, clean_test, recipe, seed, orig, cb))
            out[part] = {"summary": summarize(runs), "runs": [{k: v for k, v in r.items() if k != "history"} | {
                "rank_power_by_epoch": [h["rank_power"] for h in r["history"]]} for r in runs]}
        thieves[recipe.name] = out
    per = {}
    for name, t in thieves.items():
        s = t["protected"]["summary"]
        c = t.get("clean", {}).get("summary")
        per[name] = {"protected": {"final": s["final"]["rank_power"]["mean"], "val_selected": s["val_selected"]["rank_power"]["mean"]},
                     "clean": None if c is None else {"final": c["final"]["rank_power"]["mean"],
                                                      "val_selected": c["val_selected"]["rank_power"]["mean"]}}
        if "few_clean_final" in s:  # the same thief, last layer refitted on a few clean images
            per[f"{name} + few-clean refit"] = {
                "protected": {"final": s["few_clean_final"]["rank_power"]["mean"],
                              "val_selected": s["few_clean_val_selected"]["rank_power"]["mean"]},
                "clean": per[name]["clean"]}
    return {"thieves": thieves, "verdict": decide(per), "seeds": list(seeds), "epochs": recipes[0].epochs,
            "train_samples": int(len(protected[0])), "test_samples": int(len(clean_test[0])), "val": val_note,
            "seconds": round(time.perf_counter() - t0, 1)}


def format_suite(doc: dict) -> str:
    """A plain-text table: per thief ranking power and balanced accuracy, final / val-selected."""
    lines = [f"thief suite: {doc['train_samples']} training / {doc['test_samples']} clean test images, {doc['epochs']} epochs, "
             f"seeds {','.join(map(str, doc['seeds']))}, epoch selection on the {doc['val']}",
             "ranking power = max(AUC, 1-AUC); each cell: final / val-selected epoch (mean over seeds)"]
    for name, t in doc["thieves"].items():
        for part in ("protected", "clean"):
            if part not in t:
                continue
            s = t["protected" if part == "protected" else "clean"]["summary"]
            row = (f"  {name:28s} trained on {part:9s} ranking power {s['final']['rank_power']['mean']:.3f} / "
                   f"{s['val_selected']['rank_power']['mean']:.3f}  balanced {s['final']['balanced_acc']['mean']:.3f} / "
                   f"{s['val_selected']['balanced_acc']['mean']:.3f}")
            if "few_clean_final" in s:
                row += (f"  few-clean refit {s['few_clean_final']['rank_power']['mean']:.3f} / "
                        f"{s['few_clean_val_selected']['rank_power']['mean']:.3f}")
            lines.append(row)
    return "\n".join(lines)
