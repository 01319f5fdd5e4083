"""Epoch by epoch: when does a thief rank clean patients best, and why its chosen epoch is high (issue 12).

Reads the committed per-run results of the efficacy grid (benchmarks/results_efficacy/), draws the
thieves' clean-test ranking power max(AUC, 1-AUC) per epoch for a few methods (one line per seed,
the epoch each thief picks on its clean val split marked) and prints, per method and thief:

- the epochs the thief picked (one per seed);
- the mean ranking power in epochs 1-10 (the high-learning-rate half of the cosine schedule) and
  in epochs 11-20;
- the mean swing |RP(e+1) - RP(e)| between consecutive epochs in each half;
- the mean last-epoch and chosen-epoch ranking power (the grid's two views).

    python benchmarks/efficacy_epochs.py --dataset pneumoniamnist --methods clean,salm-tex:mask_ratio=0.3,em,ops \
        --figure docs/efficacy_epochs_pneumoniamnist.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.efficacy import RESULTS, _safe  # noqa: E402

THIEVES = ("cnn-sgd-aug-20ep", "resnet18-sgd-aug-20ep", "vgg-sgd-aug-20ep")
COLOURS = {"clean": "0.55", "salm-tex:mask_ratio=0.3": "tab:red", "em": "tab:blue", "ops": "tab:green",
           "tap": "tab:purple", "em-class": "tab:orange"}
HALF = 10  # epochs 1-10: the first half of the 20-epoch cosine schedule, learning rate above 0.025


def runs(dataset: str, method: str, thief: str) -> list[dict]:
    """Every cached run of one method and thief, seed order (the file name carries the seeds)."""
    files = sorted((RESULTS / dataset).glob(f"{_safe(method)}-p*-{thief}-a*.json"))
    return [json.loads(f.read_text()) for f in files]


def epoch_summary(run_list: list[dict]) -> dict:
    """The per-method, per-thief figures the table prints (see the module docstring)."""
    curves = [np.array([h["rank_power"] for h in r["history"]]) for r in run_list]
    early = [c[:HALF] for c in curves]
    late = [c[HALF:] for c in curves]
    return {
        "seeds": len(curves),
        "chosen_epochs": [int(r["val_selected"]["epoch"]) for r in run_list],
        "mean_early": float(np.mean([c.mean() for c in early])),
        "mean_late": float(np.mean([c.mean() for c in late])) if all(len(c) for c in late) else float("nan"),
        "swing_early": float(np.mean([np.abs(np.diff(c)).mean() for c in early])),
        "swing_late": float(np.mean([np.abs(np.diff(c)).mean() for c in late])) if all(len(c) > 1 for c in late) else float("nan"),
        "final": float(np.mean([r["final"]["rank_power"] for r in run_list])),
        "chosen": float(np.mean([r["val_selected"]["rank_power"] for r in run_list])),
    }


def table(dataset: str, methods: list[str]) -> str:
    lines = ["| method | thief | seeds | chosen epochs | mean RP, epochs 1-10 / 11-20 | mean swing, 1-10 / 11-20 | final / chosen |",
             "|---|---|---|---|---|---|---|"]
    for method in methods:
        for thief in THIEVES:
            found = runs(dataset, method, thief)
            if not found:
                continue
            s = epoch_summary(found)
            lines.append(f"| {method} | {thief} | {s['seeds']} | {', '.join(map(str, s['chosen_epochs']))} | "
                         f"{s['mean_early']:.2f} / {s['mean_late']:.2f} | {s['swing_early']:.3f} / {s['swing_late']:.3f} | "
                         f"{s['final']:.2f} / {s['chosen']:.2f} |")
    return "\n".join(lines)


def figure(dataset: str, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(THIEVES), figsize=(4.2 * len(THIEVES), 3.9), sharey=True)
    for ax, thief in zip(axes, THIEVES):
        for method in methods:
            colour = COLOURS.get(method, None)
            for i, r in enumerate(runs(dataset, method, thief)):
                rp = [h["rank_power"] for h in r["history"]]
                epochs = np.arange(1, len(rp) + 1)
                label = ("default (salm)" if method.startswith("salm-tex") else method) if i == 0 else None
                line, = ax.plot(epochs, rp, color=colour, lw=1.2, alpha=0.8, label=label)
                chosen = int(r["val_selected"]["epoch"])
                ax.plot([chosen], [rp[chosen - 1]], "o", color=line.get_color(), ms=6, mfc="white", mew=1.5)
        ax.axvspan(0.5, HALF + 0.5, color="0.93", zorder=0)
        ax.axhline(0.65, color="k", ls=":", lw=0.8)
        ax.set_title(thief.replace("-sgd-aug-20ep", "") + ", crop + flip, SGD cosine")
        ax.set_xlabel("epoch")
        ax.set_xticks([1, 5, 10, 15, 20])
        ax.set_ylim(0.45, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("clean-test ranking power max(AUC, 1-AUC)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(methods), fontsize=8, frameon=False)
    fig.suptitle(f"{dataset}: the thief's clean-test ranking power per epoch, one line per seed\n"
                 "circle = the epoch its clean val split picks; grey = the high-learning-rate half; dotted = 0.65", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="pneumoniamnist")
    ap.add_argument("--methods", default="clean,salm-tex:mask_ratio=0.3,em,ops")
    ap.add_argument("--figure", type=Path, default=None, help="PNG path (none: table only)")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    print(table(args.dataset, methods))
    if args.figure:
        figure(args.dataset, methods, args.figure)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
