"""Legacy efficacy benchmark (issue 3): attackers WITHOUT augmentation, Adam, no val split. Kept so the earlier tables in
docs/benchmarks.md stay reproducible; the realistic thief suite is benchmarks/efficacy.py (issue 12).

clean / random / EM / SALM on BreastMNIST and PneumoniaMNIST (issue 3).

Protects the *training split only*, then trains fresh attackers on the protected split and tests
them on the clean test split. Per row: generation seconds, rounds, fraction of pixels changed,
PSNR and SSIM (scikit-image, data range 255, mean over images), and per attacker accuracy,
balanced accuracy and AUC, final and peak over epochs.

One command (about an hour on 2 busy CPU cores; add --subset 1000 for a quick look):

    python benchmarks/efficacy_legacy.py --markdown docs/benchmarks.md

Results are printed as a markdown table, written as JSON next to it (benchmarks/results/), and
with --markdown appended to the efficacy section of that file.

A single attacker run's final metrics swing by 0.1 or more between epochs and seeds on these
noises; --attacker-seeds K trains every attacker K times (seeds SEED..SEED+K-1) and reports the
mean with the range of the final values. --save-protected DIR keeps each protected training split
as an npz, so other attackers or defences can be tried on it without protecting again.
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
from salm_desktop.core.model import IntensityMap  # noqa: E402
from salm_desktop.core.protect import ProtectSettings, protect_series  # noqa: E402

from efficacy import _value, image_quality  # noqa: E402  (benchmarks/efficacy.py, the current grid)

DATA = Path(os.environ.get("SALM_TEST_DATA", REPO.parent / "shared" / "data")) / "medmnist"


def parse_row(spec: str) -> tuple[str, dict]:
    """clean | random:R | em | salm:R[:key=value...]  ->  (label, ProtectSettings kwargs or {})."""
    parts = spec.split(":")
    method = parts[0]
    kwargs: dict = {}
    if method == "clean":
        return "clean", {}
    kwargs["method"] = method
    if len(parts) > 1 and parts[1]:
        kwargs["mask_ratio"] = float(parts[1])
    for kv in parts[2:]:
        k, v = kv.split("=")
        kwargs[k] = _value(v)
    return spec, kwargs


def attack(prot: np.ndarray, labels: np.ndarray, test, arch: str, epochs: int, seeds: list[int]) -> dict:
    """Train ``arch`` once per attacker seed; final/peak are means over the seeds, each run is kept."""
    t0 = time.perf_counter()
    runs = []
    for s in seeds:
        res = train_and_test((prot, labels), test, arch, epochs, s, IntensityMap.for_uint8())
        runs.append({"seed": s, "final": res["final"], "peak": res["peak"],
                     "auc_by_epoch": [round(h["auc"], 4) for h in res["history"]]})
    mean = {part: {k: float(np.mean([r[part][k] for r in runs])) for k in runs[0][part]} for part in ("final", "peak")}
    return {**mean, "runs": runs, "seconds": round(time.perf_counter() - t0, 1)}


def run_dataset(name: str, rows: list[str], archs: list[str], epochs: int, subset: int | None, seed: int,
                base: dict, attacker_seeds: int = 1, save_dir: Path | None = None) -> list[dict]:
    npz = DATA / f"{name}.npz"
    with np.load(npz) as z:
        test = (z["test_images"], z["test_labels"])
        train_labels = z["train_labels"]
    series = medmnist_series(npz, "train", n=subset)
    n = len(series.samples)
    clean = np.stack([s.read() for s in series.samples]).astype(np.uint8)
    labels = train_labels[:n]
    out = []
    for spec in rows:
        label, kwargs = parse_row(spec)
        row = {"dataset": name, "row": label, "train_images": n}
        if label == "clean":
            prot = clean
            row.update(seconds=0.0, rounds=0, fraction_pixels_changed=0.0, psnr=float("inf"), ssim=1.0)
        else:
            settings = ProtectSettings(**{**base, **kwargs, "seed": seed})
            t0 = time.perf_counter()
            result = protect_series([series], settings)
            seconds = time.perf_counter() - t0
            prot = np.stack([result.protected(series.id, i) for i in range(n)])
            budget = settings.epsilon * 255  # MedMNIST is uint8 with the full 0..255 window
            assert np.abs(prot - clean).max() <= np.floor(budget + 0.5) + 1e-6, "budget exceeded"
            prot = prot.astype(np.uint8)
            if save_dir is not None:
                save_dir.mkdir(parents=True, exist_ok=True)
                safe = spec.replace(":", "_").replace("=", "-").replace("/", "_")
                np.savez_compressed(save_dir / f"{name}-{safe}-seed{seed}.npz", train_images=prot, train_labels=labels)
            psnr, ssim = image_quality(clean, prot)
            row.update(seconds=round(seconds, 1), rounds=result.summary["rounds"],
                       fraction_pixels_changed=round(result.summary["fraction_pixels_changed"], 4),
                       surrogate_accuracy=result.summary["surrogate_accuracy"],
                       surrogate_loss=result.summary["surrogate_loss"], psnr=round(psnr, 2), ssim=round(ssim, 4),
                       settings={k: v for k, v in settings.as_dict().items() if k not in ("device",)})
        for arch in archs:
            row[arch] = attack(prot, labels, test, arch, epochs, [seed + k for k in range(attacker_seeds)])
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def _cell(res: dict, key: str) -> str:
    """final / peak (mean over attacker seeds); with several seeds the range of the final value follows."""
    text = f"{res['final'][key]:.3f} / {res['peak'][key]:.3f}"
    finals = [r["final"][key] for r in res.get("runs", [])]
    if len(finals) > 1:
        text += f" ({min(finals):.2f}-{max(finals):.2f})"
    return text


def markdown(rows: list[dict], archs: list[str], header: str) -> str:
    lines = [header, ""]
    cols = ["dataset", "row", "gen s", "rounds", "changed", "PSNR dB", "SSIM"]
    for a in archs:
        cols += [f"{a} bal (final/peak)", f"{a} AUC (final/peak)", f"{a} acc (final/peak)"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows:
        cells = [r["dataset"], r["row"], f"{r['seconds']:.0f}", str(r["rounds"]), f"{100 * r['fraction_pixels_changed']:.1f} %",
                 "inf" if not np.isfinite(r["psnr"]) else f"{r['psnr']:.1f}", f"{r['ssim']:.3f}"]
        for a in archs:
            cells += [_cell(r[a], "balanced_acc"), _cell(r[a], "auc"), _cell(r[a], "acc")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="breastmnist,pneumoniamnist")
    ap.add_argument("--rows", default="clean,random:0.2,em,salm:0.05,salm:0.1,salm:0.2,salm:0.5",
                    help="comma-separated: clean | random:R | em | salm:R[:key=value...] (ProtectSettings fields)")
    ap.add_argument("--archs", default="cnn,resnet")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--subset", type=int, default=None, help="only the first N training images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core CPU)")
    ap.add_argument("--attacker-seeds", type=int, default=1,
                    help="train each attacker this many times (seeds SEED, SEED+1, ...); tables show the mean and the range")
    ap.add_argument("--save-protected", type=Path, default=None,
                    help="also write each row's protected training split to DIR/<dataset>-<row>-seed<N>.npz")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    ap.add_argument("--json-out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    archs = args.archs.split(",")
    base = {"device": args.device}
    rows = []
    t0 = time.perf_counter()
    for name in args.datasets.split(","):
        rows += run_dataset(name, args.rows.split(","), archs, args.epochs, args.subset, args.seed, base,
                            args.attacker_seeds, args.save_protected)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/efficacy_legacy.py " + " ".join(sys.argv[1:])
    header = (f"#### Run {stamp}\n\n`{cmd}`  \n{platform.machine()}, torch {torch.__version__}, "
              f"{args.threads} thread(s), device {args.device}, attackers trained {args.epochs} epochs (Adam 1e-3, batch 32), "
              f"seed {args.seed}, {args.attacker_seeds} attacker seed(s), total {time.perf_counter() - t0:.0f} s. Bal = balanced accuracy on the clean test split.")
    table = markdown(rows, archs, header)
    print(table)
    args.json_out.mkdir(parents=True, exist_ok=True)
    (args.json_out / f"efficacy-{stamp.replace(' ', '_').replace(':', '')}.json").write_text(json.dumps(rows, indent=1))
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
