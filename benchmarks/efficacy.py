"""Efficacy grid (issue 12): every protection method against the realistic thief suite.

Protects the *training split* of each MedMNIST dataset with each method, then trains the thief
suite (``salm_desktop.core.evaluate.thieves.default_suite``: plain CNN, ResNet-18 and VGG-style with
crop+flip, SGD+momentum+cosine, Adam, a no-augmentation row, a 10 %-clean-mix row and a
plain CNN that blurs every image first, 20 epochs)
on the protected split and tests it on the clean test split. Per method: generation seconds, PSNR,
SSIM; per thief: ranking power (max(AUC, 1-AUC)) and balanced accuracy at the final epoch and at the
epoch the thief picks on the clean val split, and the few-clean refit (last layer on 50 clean images).
Mean and range over seeds; seed k protects with seed k and trains the thief with seed k.

One command, cached and resumable (every protected split and every thief run is kept under
$SALM_EFFICACY_CACHE, default benchmarks/results/efficacy_cache/, git-ignored; the small per-run JSON
results also in benchmarks/results_efficacy/, committed, so --report-only needs no cache; a rerun only
computes what is missing):

    nice -n 10 python benchmarks/efficacy.py --datasets breastmnist,pneumoniamnist \
        --methods clean,salm-v1,salm-tex,em,em-class,tap,ar,lsp,ops,random --seeds 0,1,2 --markdown docs/benchmarks.md

--thieves picks a part of the suite or names other thieves in its grammar (`cnn-sgd-aug-median-20ep`: a thief that
median-filters every image), --default-row names the row marked as the default.

--report-only rebuilds the tables and the figure (docs/efficacy_grid.png) from benchmarks/results_efficacy/
(and mirrors into it any result the cache holds that the folder lacks). $SALM_EFFICACY_RESULTS names
another folder: the countermeasure thieves' grid keeps its own, so that its freshly generated splits
do not overwrite the main grid's generation records.
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

from salm_desktop.core.evaluate import medmnist_series  # noqa: E402
from salm_desktop.core.evaluate.thieves import ThiefRecipe, default_suite, parse_thief, run_thief, summarize  # noqa: E402
from salm_desktop.core.protect import ProtectSettings, protect_series  # noqa: E402

DATA = Path(os.environ.get("SALM_TEST_DATA", REPO.parent / "shared" / "data")) / "medmnist"
CACHE = Path(os.environ.get("SALM_EFFICACY_CACHE", REPO / "benchmarks" / "results" / "efficacy_cache"))
# the small JSON results (protected-split meta, one file per thief run) are also kept here, committed, so a
# lost cache loses only the protected arrays: --report-only rebuilds the tables from this folder alone
RESULTS = Path(os.environ.get("SALM_EFFICACY_RESULTS", REPO / "benchmarks" / "results_efficacy"))
START, END = "<!-- efficacy-grid:start -->", "<!-- efficacy-grid:end -->"
DEFAULT_ROW = "salm"


def image_quality(orig: np.ndarray, prot: np.ndarray) -> tuple[float, float]:
    """Mean per-image PSNR (unchanged images left out) and SSIM, data range 255."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim = [], []
    for o, p in zip(orig.astype(np.float64), prot.astype(np.float64)):
        if np.any(o != p):
            psnr.append(peak_signal_noise_ratio(o, p, data_range=255))
        ssim.append(structural_similarity(o, p, data_range=255))
    return (float(np.mean(psnr)) if psnr else float("inf")), float(np.mean(ssim))


def _value(v: str):
    if v in ("true", "false"):
        return v == "true"
    if v == "none":  # e.g. early_exit_loss=none
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def parse_row(spec: str) -> dict:
    """``clean`` | ``METHOD[:key=value...]`` (ProtectSettings fields) -> ProtectSettings kwargs ({} for clean)."""
    parts = spec.split(":")
    if parts[0] == "clean":
        return {}
    kwargs: dict = {"method": parts[0]}
    for kv in parts[1:]:
        k, v = kv.split("=")
        kwargs[k] = _value(v)
    return kwargs


def _safe(spec: str) -> str:
    return spec.replace(":", "_").replace("=", "-").replace("/", "_")


def load_dataset(name: str) -> dict:
    with np.load(DATA / f"{name}.npz") as z:
        return {
            "train": (z["train_images"], z["train_labels"].reshape(-1)),
            "val": (z["val_images"], z["val_labels"].reshape(-1)),
            "test": (z["test_images"], z["test_labels"].reshape(-1)),
        }


def read_result(name: str, fname: str) -> dict | None:
    """A result JSON from the committed folder, else from the cache (then mirrored into the folder)."""
    kept, cached = RESULTS / name / fname, CACHE / name / fname
    if kept.exists():
        return json.loads(kept.read_text())
    if cached.exists():
        text = cached.read_text()
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(text)
        return json.loads(text)
    return None


def write_result(name: str, fname: str, res: dict) -> None:
    for root in (CACHE, RESULTS):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / fname).write_text(json.dumps(res))


def protected_split(name: str, spec: str, seed: int, data: dict, log) -> tuple[np.ndarray, dict]:
    """The protected training images of ``spec`` (cached) and their quality / timing meta."""
    clean = data["train"][0]
    if spec == "clean":
        return clean, {"seconds": 0.0, "psnr": float("inf"), "ssim": 1.0, "changed": 0.0}
    d = CACHE / name
    npz, meta_path = d / f"{_safe(spec)}-p{seed}.npz", d / f"{_safe(spec)}-p{seed}.json"
    if npz.exists() and meta_path.exists():
        with np.load(npz) as z:
            return z["train_images"], read_result(name, meta_path.name)
    settings = ProtectSettings(**{"device": "cpu", **parse_row(spec), "seed": seed})
    series = medmnist_series(DATA / f"{name}.npz", "train")
    log(f"{name} {spec} seed {seed}: protecting {len(series.samples)} images")
    t0 = time.perf_counter()
    result = protect_series([series], settings)
    seconds = time.perf_counter() - t0
    prot = np.stack([result.protected(series.id, i) for i in range(len(series.samples))])
    prot = np.clip(np.rint(prot), 0, 255).astype(np.uint8)
    psnr, ssim = image_quality(clean, prot)
    diff = np.abs(prot.astype(int) - clean.astype(int))
    meta = {"seconds": round(seconds, 1), "psnr": round(psnr, 2), "ssim": round(ssim, 4),
            "changed": float(np.mean(diff > 0)), "max_change": int(diff.max()), "rounds": result.summary.get("rounds"),
            "settings": {k: v for k, v in settings.as_dict().items() if k != "device"}}
    d.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, train_images=prot)
    tmp.replace(npz)
    write_result(name, meta_path.name, meta)
    log(f"{name} {spec} seed {seed}: {seconds:.0f} s, PSNR {psnr:.2f}, SSIM {ssim:.4f}")
    return prot, meta


def _run_name(spec: str, seed: int, recipe: ThiefRecipe) -> str:
    return f"{_safe(spec)}-p{seed}-{recipe.name}-a{seed}.json"


def thief_run(name: str, spec: str, seed: int, recipe: ThiefRecipe, prot, data: dict, log) -> dict:
    """One thief run (cached); ``prot`` is the protected split or a callable that makes it."""
    done = read_result(name, _run_name(spec, seed, recipe))
    if done is not None:
        return done
    prot = prot() if callable(prot) else prot
    res = run_thief(prot, data["train"][1], data["val"], data["test"], recipe, seed, clean_train_images=data["train"][0])
    write_result(name, _run_name(spec, seed, recipe), res)
    f, v = res["final"], res["val_selected"]
    log(f"{name} {spec} seed {seed} {recipe.name}: {res['seconds']:.0f} s, rank power final {f['rank_power']:.3f} / "
        f"val-selected {v['rank_power']:.3f} (epoch {v['epoch']}), balanced {f['balanced_acc']:.3f} / {v['balanced_acc']:.3f}")
    return res


def run_grid(datasets: list[str], methods: list[str], seeds: list[int], recipes: list[ThiefRecipe], log) -> None:
    """Seed by seed, dataset by dataset, thief by thief (in the order given), every method: so that a
    partial grid compares all methods against the same thieves."""
    for seed in seeds:
        for name in datasets:
            data = load_dataset(name)
            made: dict = {}

            def prot(spec=None):  # the protected split, made (or loaded) only when a thief run is missing
                if spec not in made:
                    made[spec] = protected_split(name, spec, seed, data, log)[0]
                return made[spec]

            for spec in methods:  # every split first (so generation times compare within one process)
                if any(read_result(name, _run_name(spec, seed, r)) is None for r in recipes):
                    prot(spec)
            for recipe in recipes:
                for spec in methods:
                    thief_run(name, spec, seed, recipe, lambda spec=spec: prot(spec), data, log)


# -- report ----------------------------------------------------------------------------------------
def collect(datasets: list[str], methods: list[str], seeds: list[int], recipes: list[ThiefRecipe]) -> dict:
    """What the results folder (and cache) hold: {dataset: {spec: {"meta": [...], recipe name: summary, ...}}}."""
    out: dict = {}
    for name in datasets:
        for spec in methods:
            metas, per_recipe = [], {}
            for seed in seeds:
                meta = read_result(name, f"{_safe(spec)}-p{seed}.json")
                if spec == "clean":
                    metas.append({"seconds": 0.0, "psnr": float("inf"), "ssim": 1.0, "seed": seed})
                elif meta is not None:
                    metas.append({**meta, "seed": seed})
                for r in recipes:
                    res = read_result(name, _run_name(spec, seed, r))
                    if res is not None:
                        per_recipe.setdefault(r.name, []).append(res)
            if per_recipe:
                out.setdefault(name, {})[spec] = {"meta": metas, "thieves": {k: summarize(v) for k, v in per_recipe.items()}}
    return out


def _cell(summary: dict, view: str, key: str) -> str:
    s = summary.get(view)
    if not s:
        return "-"
    m = s[key]
    text = f"{m['mean']:.2f}"
    if summary["n"] > 1:
        text += f" ({m['min']:.2f}-{m['max']:.2f})"
    return text


def _quality(meta: list[dict]) -> tuple[str, str, str]:
    if not meta:
        return "-", "-", "-"
    psnr = [m["psnr"] for m in meta]
    return (f"{np.mean([m['seconds'] for m in meta]):.0f}",
            "inf" if not np.isfinite(np.mean(psnr)) else f"{np.mean(psnr):.1f}", f"{np.mean([m['ssim'] for m in meta]):.3f}")


def worst_case(entry: dict, view: str) -> float | None:
    vals = [s[view]["rank_power"]["mean"] for s in entry["thieves"].values() if view in s]
    return max(vals) if vals else None


def markdown(grid: dict, recipes: list[ThiefRecipe], seeds: list[int], header: str) -> str:
    names = [r.name for r in recipes]
    lines = [header, ""]
    for name, rows in grid.items():
        lines += [f"#### {name}: ranking power max(AUC, 1-AUC), final epoch / val-selected epoch (mean, range over seeds)", ""]
        cols = ["method", "seeds", "gen s", "PSNR dB", "SSIM", "worst of the thieves run, final / val-sel"] + names
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for spec, e in rows.items():
            n = max((s["n"] for s in e["thieves"].values()), default=0)
            wf, wv = worst_case(e, "final"), worst_case(e, "val_selected")
            cells = [f"**{spec}** (default)" if spec == DEFAULT_ROW else spec, str(n), *_quality(e["meta"]),
                     f"{wf:.2f} / {wv:.2f}" if wf is not None else "-"]
            for r in names:
                s = e["thieves"].get(r)
                cells.append("not run" if s is None else f"{_cell(s, 'final', 'rank_power')} / {_cell(s, 'val_selected', 'rank_power')}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"#### {name}: balanced accuracy, final / val-selected; few-clean refit (50 clean images) ranking power final / val-selected", ""]
        cols = ["method"] + [f"{r} bal" for r in names] + [f"{r} few-clean RP" for r in names if recipes[names.index(r)].few_clean]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for spec, e in rows.items():
            cells = [spec]
            for r in names:
                s = e["thieves"].get(r)
                cells.append("-" if s is None else f"{_cell(s, 'final', 'balanced_acc')} / {_cell(s, 'val_selected', 'balanced_acc')}")
            for r in names:
                if not recipes[names.index(r)].few_clean:
                    continue
                s = e["thieves"].get(r)
                cells.append("-" if s is None else f"{_cell(s, 'few_clean_final', 'rank_power')} / {_cell(s, 'few_clean_val_selected', 'rank_power')}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _shown_path(path: Path) -> str:
    """A results folder as the table header names it: relative to the repository where it lies inside."""
    try:
        return str(Path(path).resolve().relative_to(REPO.resolve()))
    except ValueError:
        return str(path)


def figure(grid: dict, recipes: list[ThiefRecipe], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(grid)), figsize=(6.5 * max(1, len(grid)), 5), squeeze=False)
    markers = dict(zip([r.name for r in recipes], "osD^vP*X"))
    specs = list(dict.fromkeys(spec for rows in grid.values() for spec in rows))  # one colour per method in every panel
    colors = {s: plt.cm.tab10(i) if i < 10 else plt.cm.Dark2(i % 8) for i, s in enumerate(specs)}
    for ax, (name, rows) in zip(axes[0], grid.items()):
        target = 0.60 if name == "breastmnist" else 0.65  # issue 12's targets
        placed = [(35.2, target)]  # label positions so far (the target's own text first): rows at one PSNR overlap
        for spec, e in rows.items():
            psnr = np.mean([m["psnr"] for m in e["meta"]]) if e["meta"] else np.nan
            x = 50.0 if not np.isfinite(psnr) else psnr  # clean data drawn at the right edge
            for rname, s in e["thieves"].items():
                ax.scatter(x, s["final"]["rank_power"]["mean"], color=colors[spec], marker=markers.get(rname, "o"), s=30, alpha=0.8)
                if "val_selected" in s:
                    ax.scatter(x, s["val_selected"]["rank_power"]["mean"], facecolors="none", edgecolors=[colors[spec]],
                               marker=markers.get(rname, "o"), s=60, alpha=0.8)
            wf = worst_case(e, "final")
            label = f"{spec} (default)" if spec == DEFAULT_ROW else spec
            ly = wf + 0.01
            while any(abs(px - x) < 2.0 and abs(py - ly) < 0.022 for px, py in placed):
                ly -= 0.025
            placed.append((x, ly))
            ax.annotate(label, (x, wf), textcoords="data", xytext=(x + 0.15, ly), fontsize=8,
                        fontweight="bold" if spec == DEFAULT_ROW else "normal", color=colors[spec])
            if spec == DEFAULT_ROW:
                ax.scatter(x, wf, marker="*", s=300, color="gold", edgecolors="black", zorder=5)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.axhline(target, color="red", lw=0.8, ls="--")
        ax.text(35.2, target + 0.005, f"target {target:.2f}", color="red", fontsize=7)
        ax.axvline(35.0, color="grey", lw=0.8, ls="--")
        ax.text(35.2, 0.46, "PSNR floor 35 dB", color="grey", fontsize=7)
        ax.set_title(f"{name}: ranking power vs PSNR\nfilled = final epoch, hollow = val-selected; clean at 50 dB")
        ax.set_xlabel("PSNR of the protected training split (dB)")
        ax.set_ylabel("thief's ranking power max(AUC, 1-AUC) on clean test")
        ax.set_ylim(0.45, 1.0)
    handles = [plt.Line2D([], [], marker=m, ls="", color="black", label=r) for r, m in markers.items()]
    axes[0][0].legend(handles=handles, fontsize=7, loc="lower right", title="thief", title_fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(doc: Path, table: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    block = f"{START}\n{table}{END}"
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")


def default_figure_path(results: Path) -> Path:
    """The docs' figure belongs to the committed grid: a re-run into another results folder draws its own."""
    committed = REPO / "benchmarks" / "results_efficacy"
    return REPO / "docs" / "efficacy_grid.png" if results.resolve() == committed.resolve() else results / "efficacy_grid.png"


def main() -> int:
    global DEFAULT_ROW
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="breastmnist,pneumoniamnist")
    ap.add_argument("--methods", default="clean,salm,em,em-class,tap,ar,lsp,ops,random",
                    help="comma-separated: clean | METHOD[:key=value...] (ProtectSettings fields)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--thieves", default=None, help="only these thief names (default: the whole suite)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core CPU)")
    ap.add_argument("--report-only", action="store_true", help="only rebuild tables and figure from the cache")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables into this file (between grid markers)")
    ap.add_argument("--figure", type=Path, default=None,
                    help="default docs/efficacy_grid.png; with $SALM_EFFICACY_RESULTS elsewhere, efficacy_grid.png there")
    ap.add_argument("--log", type=Path, default=None, help="also append progress lines to this file")
    ap.add_argument("--default-row", default=DEFAULT_ROW, help="the row marked as the SALM default in tables and figure")
    args = ap.parse_args()
    args.figure = args.figure or default_figure_path(RESULTS)
    DEFAULT_ROW = args.default_row
    torch.set_num_threads(args.threads)
    datasets, methods = args.datasets.split(","), args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = default_suite(args.epochs)
    if args.thieves:
        by_name = {r.name: r for r in recipes}
        try:  # the suite's own recipes, or any other the thief grammar spells (cnn-sgd-aug-median-20ep)
            recipes = [by_name.get(t) or parse_thief(t, args.epochs) for t in args.thieves.split(",")]
        except ValueError as exc:
            ap.error(f"{exc}; the suite: {', '.join(by_name)}")

    def log(msg: str) -> None:
        line = f"{dt.datetime.now(dt.timezone.utc):%H:%M:%S} {msg}"
        print(line, file=sys.stderr, flush=True)
        if args.log:
            with open(args.log, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    if not args.report_only:
        run_grid(datasets, methods, seeds, recipes, log)
    grid = collect(datasets, methods, seeds, recipes)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"### Grid (issue 12), tables rebuilt {stamp}\n\n"
              f"`python benchmarks/efficacy.py --datasets {args.datasets} --methods {args.methods} --seeds {args.seeds} "
              f"--epochs {args.epochs}" + (f" --thieves {args.thieves}" if args.thieves else "") +
              f" --default-row {DEFAULT_ROW}` (results: {_shown_path(RESULTS)}/; protected splits cached in $SALM_EFFICACY_CACHE)  \n"
              f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), bf16 autocast for the thieves. "
              f"Thieves: {', '.join(r.name for r in recipes)}; SGD: lr 0.05, momentum 0.9, weight decay 5e-4, cosine; "
              f"Adam 1e-3; batch 128; aug = random crop (4-pixel zero padding) + horizontal flip; mix10 = 10 % of the "
              f"training split replaced by clean originals; median / blur / jpeg10 = that filter (3x3 median, Gaussian "
              f"sigma 1, JPEG quality 10) run once on every image the thief's model sees: training, val and test. 'val-sel' = test metric at the epoch with the best ranking "
              f"power on the clean val split. Seed k = protection seed k and thief seed k. Missing cells were not run."
              + ("" if DEFAULT_ROW == "salm" else f" The default `salm` runs exactly the `{DEFAULT_ROW}` row on these "
                 "8-bit images (bit for bit: tests/core/protect/test_salm_variants.py); `salm-v1` is the earlier default, "
                 "min-min, which `salm` still runs on CT, MR and 3D.") + "\n\n"
              f"![ranking power vs PSNR]({args.figure.name})\n")
    table = markdown(grid, recipes, seeds, header)
    print(table)
    if grid:
        figure(grid, recipes, args.figure)
    if args.markdown:
        write_markdown(args.markdown, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
