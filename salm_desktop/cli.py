"""salm-protect: the headless front end. A thin layer over the same core calls as the GUI.

Exit codes: 0 success, 2 usage error or nothing loadable, 3 finished with some inputs skipped or
failed, 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Sequence

from salm_desktop import __version__

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_CANCELLED = 130


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salm-protect",
        description="Protect medical imaging datasets with SALM before sharing them (headless).",
    )
    parser.add_argument("--version", action="version", version=f"salm-protect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="list the series, images and skipped files found under PATHs")
    inspect.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    inspect.add_argument("--labels", default=None, help="label source: folders | npz | csv:FILE | none (default: auto)")
    inspect.add_argument("--json", action="store_true", help="print one JSON document to stdout")
    inspect.set_defaults(handler=_cmd_inspect)

    protect = sub.add_parser(
        "protect",
        help="protect INPUTs and write the protected copy (same formats), manifest.json and the fidelity report to --out",
    )
    protect.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    protect.add_argument("--out", required=True, type=Path, metavar="DIR", help="a new (or empty) folder outside the inputs")
    protect.add_argument("--method", default="salm", choices=["salm", "em", "random", "em-class", "tap", "ar", "lsp", "ops"],
                         help="salm (default); em, random and the published peers em-class, tap, ar, lsp, ops (docs/algorithm.md)")
    protect.add_argument("--epsilon", default="8/255", help="budget in the normalized scale, e.g. 8/255 or 0.03")
    protect.add_argument("--mask-ratio", default=None, help="fraction of pixels SALM may change (default: the engine's)")
    protect.add_argument("--labels", default=None,
                         help="folders | npz | csv:FILE | clusters:K (pseudo-labels; needed for unlabelled DICOM/NIfTI)")
    protect.add_argument("--splits", default="train", help="npz splits to protect, comma-separated (others are copied)")
    protect.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    protect.add_argument("--seed", type=int, default=0)
    protect.add_argument("--max-rounds", type=int, default=None, help="upper bound on min-min rounds")
    protect.add_argument("--roi", type=Path, default=None, metavar="LABELMAP",
                         help="label map (e.g. NRRD) for ROI mean/std changes in the report")
    protect.add_argument("--efficacy", type=Path, default=None, metavar="JSON",
                         help="efficacy numbers to include in the report (e.g. saved from 'salm-protect evaluate --json')")
    protect.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    protect.add_argument("--no-report", action="store_true", help="skip report.html / report.pdf")
    protect.add_argument("--json", action="store_true", help="last line of stdout: one JSON object with the summary")
    protect.set_defaults(handler=_cmd_protect)

    evaluate = sub.add_parser(
        "evaluate",
        help="train a fresh classifier on protected and on clean training data, test both on clean test data",
    )
    evaluate.add_argument("--protected", required=True, type=Path, metavar="FILE_OR_DIR",
                          help="npz with train_images/train_labels, or a folder with train/<class>/ images")
    evaluate.add_argument("--clean", required=True, type=Path, metavar="FILE_OR_DIR",
                          help="npz (or folder tree) with the clean train and test splits")
    evaluate.add_argument("--thieves", default="suite", metavar="NAMES",
                          help="'suite' (default: cnn, resnet18 and vgg with crop+flip and SGD, resnet18 with Adam, without "
                               "augmentation and with 10%% clean images mixed in) or names like resnet18-sgd-aug,vgg-adam-noaug")
    evaluate.add_argument("--seeds", default="0", help="thief seeds, comma-separated (mean and range are reported)")
    evaluate.add_argument("--arch", default=None, help="legacy countermeasure check (with --defense): cnn | resnet | densenet")
    evaluate.add_argument("--epochs", type=int, default=20)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--defense", default=None, metavar="NAME",
                          help="a thief's countermeasure, applied to both training runs: none | augment | blur | median | "
                               "jpeg75 | jpeg10 | bitdepth | advtrain; several comma-separated (each run in turn), "
                               "combine with '+' (jpeg10+augment)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON document to stdout")
    evaluate.set_defaults(handler=_cmd_evaluate)

    batch = sub.add_parser("batch", help="protect many folders from a TOML config; rerun the same command to resume",
                           description="Exit codes: 0 all done, 2 usage or configuration error, "
                                       "3 finished with some inputs skipped or failed, 130 cancelled (rerun to resume).")
    batch.add_argument("--config", required=True, type=Path, metavar="FILE", help="batch config (TOML), see docs/batch.md")
    batch.add_argument("--json", action="store_true", help="machine-readable progress: one JSON object per line on stdout")
    batch.set_defaults(handler=_cmd_batch)

    return parser


def _cmd_inspect(args: argparse.Namespace) -> int:
    from salm_desktop.core.studies import LabelsError, inspect_paths

    try:
        report = inspect_paths(args.paths, labels=args.labels)
    except (FileNotFoundError, LabelsError) as exc:  # a missing PATH or a bad labels source
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from salm_desktop.core.studies import format_inspect_report

        print(format_inspect_report(report))
    return EXIT_OK if report["series"] else EXIT_USAGE


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.defense is None and args.arch is None:
        return _cmd_evaluate_suite(args)
    return _cmd_evaluate_legacy(args)


def _cmd_evaluate_suite(args: argparse.Namespace) -> int:
    """The realistic thief suite; the last line of stdout is the verdict (or, with --json, the JSON document)."""
    from salm_desktop.core.evaluate import load_split
    from salm_desktop.core.evaluate.suite import evaluate_suite, format_suite
    from salm_desktop.core.evaluate.thieves import default_suite, parse_thief
    from salm_desktop.core.evaluate.verdict import verdict_line

    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    try:
        recipes = default_suite(args.epochs) if args.thieves.strip() == "suite" else [
            parse_thief(t, args.epochs) for t in args.thieves.split(",") if t.strip()]
        seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    except ValueError as exc:
        raise UsageError(f"--thieves/--seeds: {exc}") from exc
    try:
        protected = load_split(args.protected, "train")
        clean_train = load_split(args.clean, "train")
        clean_test = load_split(args.clean, "test")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        clean_val = load_split(args.clean, "val")
    except ValueError:
        clean_val = None  # the suite holds out part of the clean training split instead
    if protected[0].shape[1:] != clean_test[0].shape[1:]:
        raise UsageError(f"{args.protected}: image size {protected[0].shape[1:]} differs from the clean test split {clean_test[0].shape[1:]}")
    if protected[0].ndim != 3:
        raise UsageError(f"{args.protected}: the thief suite evaluates 2D grey images only")

    def show(tag: str, epoch: int, epochs: int, m: dict) -> None:
        if not args.json:
            print(f"  {tag} epoch {epoch}/{epochs}: ranking power {m['rank_power']:.3f} balanced {m['balanced_acc']:.3f}",
                  file=sys.stderr)

    res = evaluate_suite(protected, clean_train, clean_val, clean_test, recipes, seeds, progress=show)
    if args.json:
        print(json.dumps(res))
    else:
        print(format_suite(res))
        print(verdict_line(res["verdict"]))
    return EXIT_OK


def _cmd_evaluate_legacy(args: argparse.Namespace) -> int:
    """The countermeasure check (--defense): the earlier attackers (docs/robustness.md)."""
    from salm_desktop.core.evaluate import ARCHS, evaluate_efficacy, load_split
    from salm_desktop.core.evaluate.verdict import decide, verdict_line

    args.arch = args.arch or "cnn"
    args.epochs = args.epochs if args.epochs else 15
    from salm_desktop.core.progress import Progress

    archs = [a.strip().lower() for a in str(args.arch).split(",") if a.strip()]
    for arch in archs:
        if arch not in ARCHS:
            raise UsageError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")
    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    from salm_desktop.core.evaluate.defenses import canonical

    try:
        defenses = [canonical(d) for d in str(args.defense or "none").split(",") if d.strip()] or [None]
    except ValueError as exc:
        raise UsageError(f"--defense: {exc}") from exc
    try:
        protected = load_split(args.protected, "train")
        clean_train = load_split(args.clean, "train")
        clean_test = load_split(args.clean, "test")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if protected[0].shape[1:] != clean_test[0].shape[1:]:
        raise UsageError(f"{args.protected}: image size {protected[0].shape[1:]} differs from the clean test split {clean_test[0].shape[1:]}")

    def show(ev) -> None:  # noqa: ANN001
        if ev.stage == "evaluate" and not args.json:
            print(f"  {ev.message}: acc {ev.metrics.get('acc', 0):.3f} balanced {ev.metrics.get('balanced_acc', 0):.3f} "
                  f"AUC {ev.metrics.get('auc', 0):.3f}", file=sys.stderr)

    results = []
    for arch in archs:
        for defense in defenses:
            res = evaluate_efficacy(protected, clean_train, clean_test, arch=arch, epochs=args.epochs, seed=args.seed,
                                    defense=defense, progress=Progress(show))
            results.append(res)
    per = {f"{r['arch']}+{r['defense'] or 'none'}": {
        "protected": {"final": max(r["protected"]["final"]["auc"], 1 - r["protected"]["final"]["auc"]),
                      "val_selected": max(r["protected"]["peak"]["auc"], 1 - r["protected"]["peak"]["auc"])},
        "clean": {"final": max(r["clean"]["final"]["auc"], 1 - r["clean"]["final"]["auc"])}} for r in results}
    verdict = decide(per)  # legacy attackers have no val split: their peak epoch stands in for the val-selected one
    if args.json:
        doc = results[0] if len(results) == 1 else {"results": results}
        print(json.dumps({**doc, "verdict": verdict}))
    else:
        for res in results:
            print(f"attacker {res['arch']}, defense {res['defense'] or 'none'}, {res['epochs']} epochs, seed {res['seed']}, "
                  f"{res['train_samples']} training / {res['test_samples']} clean test images")
            for part in ("clean", "protected"):
                f, p = res[part]["final"], res[part]["peak"]
                print(f"  trained on {part:9s}  final: acc {f['acc']:.3f}  balanced {f['balanced_acc']:.3f}  AUC {f['auc']:.3f}"
                      f"   peak: acc {p['acc']:.3f}  balanced {p['balanced_acc']:.3f}  AUC {p['auc']:.3f}")
        print(verdict_line(verdict).replace("val-selected epoch", "peak epoch"))
    return EXIT_OK


def _cmd_protect(args: argparse.Namespace) -> int:
    from salm_desktop.core.jobs import JobError, run_protect_job
    from salm_desktop.core.progress import Cancelled, Progress
    from salm_desktop.core.options import OptionError, build_settings

    options = {"method": args.method, "epsilon": args.epsilon, "mask_ratio": args.mask_ratio, "labels": args.labels,
               "device": args.device, "seed": args.seed, "max_rounds": args.max_rounds}
    try:
        settings, loader_labels = build_settings(options)
    except OptionError as exc:
        raise UsageError(str(exc)) from None
    splits = [s.strip() for s in str(args.splits).split(",") if s.strip()]
    efficacy = None
    if args.efficacy is not None:
        try:
            lines = [line for line in args.efficacy.read_text(encoding="utf-8").splitlines() if line.strip()]
            efficacy = json.loads(lines[-1]) if lines else None  # the last line of an evaluate --json run
        except (OSError, ValueError) as exc:
            raise UsageError(f"--efficacy {args.efficacy}: not a readable JSON file ({exc.__class__.__name__})") from None
        if not isinstance(efficacy, dict):
            raise UsageError(f"--efficacy {args.efficacy}: expected one JSON object")

    last_stage = {"stage": None}

    def show(ev) -> None:  # noqa: ANN001 - a ProgressEvent; progress goes to stderr, never stdout
        if ev.stage == "log":
            print(f"  {ev.message}", file=sys.stderr)
            return
        if ev.stage != last_stage["stage"] or ev.done >= ev.total:
            last_stage["stage"] = ev.stage
            print(f"[{ev.stage}] {ev.done}/{ev.total} {ev.message}", file=sys.stderr)

    progress = Progress(show)
    try:
        result = run_protect_job(args.inputs, args.out, settings, labels=loader_labels, splits=splits,
                                 report=not args.no_report, progress=progress, overwrite=args.overwrite, roi=args.roi,
                                 efficacy=efficacy)
    except JobError as exc:
        raise UsageError(str(exc)) from None
    except Cancelled:
        print("salm-protect: cancelled; nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
    for item in result.skipped:
        print(f"skipped: {item.path}: {item.reason}", file=sys.stderr)
    s = result.summary
    if args.json:
        print(json.dumps(result.as_json(), default=str))
    else:
        print(f"protected {s.get('samples')} samples with {s.get('method')} in {s.get('seconds')} s on {s.get('device')}: "
              f"{100 * float(s.get('fraction_pixels_changed', 0)):.1f}% of pixels changed, largest change "
              f"{s.get('max_abs_change_native')} (native units), "
              f"PSNR {'infinite' if s.get('psnr_db') is None else format(s.get('psnr_db'), '.2f') + ' dB'}")
        print(f"written to {result.out_dir} (manifest: {result.manifest.name if result.manifest else '-'}"
              f"{', report: report.html, report.pdf' if result.report_html else ''})")
    return EXIT_PARTIAL if result.skipped else EXIT_OK


def _cmd_batch(args: argparse.Namespace) -> int:
    from salm_desktop.core.batch import ConfigError, load_config, run_batch
    from salm_desktop.core.progress import Cancelled, Progress

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    current = {"job": "", "index": 0}
    bar = _TerminalBar(sys.stderr)

    json_lock = threading.Lock()  # the background writer logs from its own thread

    def show(ev) -> None:  # noqa: ANN001 - a ProgressEvent
        if args.json:
            line = json.dumps({"event": "progress" if ev.stage != "log" else "log", "job": current["job"],
                               "stage": ev.stage, "done": ev.done, "total": ev.total, "message": ev.message,
                               "eta_s": None if ev.eta_s is None else round(ev.eta_s, 1), **ev.metrics}, default=str)
            with json_lock:
                print(line, flush=True)
        elif ev.stage == "log":
            bar.line(ev.message)
        else:
            bar.show(f"[{current['index'] + 1}/{len(config.jobs)} {current['job']}] {ev.stage}", ev.fraction, ev.eta_s)

    def on_job(index: int, job) -> None:  # noqa: ANN001
        current.update(job=job.name, index=index)

    try:
        result = run_batch(config, Progress(show), on_job=on_job)
    except (Cancelled, KeyboardInterrupt):
        bar.line(f"salm-protect: batch cancelled; rerun the same command to resume (summary: {config.output / 'batch-summary.json'})")
        return EXIT_CANCELLED
    bar.finish()
    for job in result.jobs:
        line = {"event": "job", **job.as_dict()}
        if args.json:
            print(json.dumps(line, default=str), flush=True)
        else:
            extra = f", {job.units_reused} series reused from an earlier run" if job.units_reused else ""
            print(f"{job.name}: {job.status}{extra}{': ' + job.message if job.message else ''}"
                  f"{f' -> {job.out_dir}' if job.out_dir and job.status != 'failed' else ''}")
            for item in job.skipped:
                print(f"  skipped: {item['path']}: {item['reason']}")
    if args.json:
        print(json.dumps({"event": "summary", "summary": str(result.summary_path),
                          "jobs": len(result.jobs), "complete": result.complete}), flush=True)
    return EXIT_OK if result.complete else EXIT_PARTIAL


class _TerminalBar:
    """A one-line progress bar on a terminal; plain lines when the stream is not a terminal.

    Batch's background writer logs lines from its own thread, hence the lock.
    """

    def __init__(self, stream) -> None:  # noqa: ANN001
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""
        self._lock = threading.Lock()

    def show(self, label: str, fraction: float, eta_s: float | None) -> None:
        filled = int(round(fraction * 30))
        eta = f" ETA {int(eta_s // 60)}m{int(eta_s % 60):02d}s" if eta_s is not None else ""
        text = f"{label} [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}%{eta}"
        with self._lock:
            if self.tty:
                self.stream.write("\r" + text.ljust(len(self.last)))
                self.stream.flush()
            elif label != self.last.split(" [")[0] or fraction >= 1.0:
                self.stream.write(text + "\n")
            self.last = text

    def line(self, text: str) -> None:
        with self._lock:
            if self.tty and self.last:
                self.stream.write("\n")
            self.stream.write(text + "\n")
            self.last = ""

    def finish(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"salm-protect: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("salm-protect: cancelled", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    raise SystemExit(main())
