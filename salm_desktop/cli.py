"""salm-protect: the headless front end. A thin layer over the same core calls as the GUI.

Exit codes: 0 success, 2 usage error or nothing loadable, 3 finished with some inputs skipped or
failed, 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from salm_desktop import __version__
from salm_desktop.core.options import add_setting_arguments

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
    protect.add_argument("inputs", nargs="+", type=str, metavar="INPUT",
                         help="a file or folder, or a PACS source: dicomweb:URL[/studies/UID] or dimse:AET@HOST:PORT")
    protect.add_argument("--out", required=True, type=Path, metavar="DIR", help="a new (or empty) folder outside the inputs")
    protect.add_argument("--splits", default="train", help="npz splits to protect, comma-separated (others are copied)")
    add_setting_arguments(protect)  # every ProtectSettings field, from the one option schema
    protect.add_argument("--roi", type=Path, default=None, metavar="LABELMAP",
                         help="label map (e.g. NRRD) for ROI mean/std changes in the report")
    protect.add_argument("--efficacy", type=Path, default=None, metavar="JSON",
                         help="efficacy numbers to include in the report (e.g. saved from 'salm-protect evaluate --json')")
    protect.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    protect.add_argument("--no-report", action="store_true", help="skip report.html / report.pdf")
    protect.add_argument("--json", action="store_true", help="last line of stdout: one JSON object with the summary")
    deid = protect.add_argument_group(
        "de-identification", "DICOM outputs are de-identified by default (PS3.15 Basic Profile, see docs/deidentification.md)")
    deid.add_argument("--secret", type=Path, default=None, metavar="FILE",
                      help="the hospital's pseudonym secret (default: created on first use in the user's configuration folder)")
    deid.add_argument("--steward-record", type=Path, default=None, metavar="DIR",
                      help="private record of the UID map and pseudonyms, outside the release (default: OUT.steward next to it)")
    deid.add_argument("--keep-identity", action="store_true",
                      help="do NOT de-identify (internal use only: names, IDs and links to the originals stay)")
    deid.add_argument("--allow-burned-in", action="store_true",
                      help="also write files that may show burned-in annotations (after checking their pixels)")
    deid.add_argument("--retain-dates", action="store_true", help="keep dates, shifted per patient (option 113107)")
    deid.add_argument("--retain-patient-characteristics", action="store_true",
                      help="keep sex, age, size, weight (option 113108)")
    deid.add_argument("--retain-device-identity", action="store_true", help="keep device serial numbers, station name (option 113109)")
    deid.add_argument("--clean-descriptions", action="store_true",
                      help="keep descriptions with known identifiers removed, instead of dropping them (option 113105)")
    deid.add_argument("--retain-safe-private", action="store_true",
                      help="keep the private attributes PS3.15 lists as safe, drop the others (option 113111)")
    _add_release_record_options(protect)  # issue 15: operator, purpose, --evaluate
    protect.add_argument("--keys", type=Path, default=None, metavar="KEYDIR",
                         help="also mark the release with secret ownership keys and write them to KEYDIR, a new folder "
                              "outside the release that you keep private (see 'salm-protect verify'); experimental: it WEAKENS THE "
                              "PROTECTION (thieves of a keyed release rank patients almost as well as on clean data), lowers "
                              "the release's PSNR by about 3.4 dB and is removed by JPEG or a median filter (docs/ownership.md)")
    protect.add_argument("--study", default=None, metavar="UID", help="PACS sources: the study to retrieve")
    protect.add_argument("--series", action="append", default=[], metavar="UID",
                         help="PACS sources: retrieve only this series (repeatable)")
    protect.add_argument("--accession", default=None, metavar="N", help="PACS sources: the study with this accession number")
    protect.add_argument("--send", action="append", default=[], metavar="DEST",
                         help="after the release is complete, send its DICOM instances to dicomweb:URL or "
                              "dimse:AET@HOST:PORT (repeatable; credentials: docs/pacs.md)")
    protect.set_defaults(handler=_cmd_protect)

    verify = sub.add_parser("verify", help="test whether a suspect model was trained on a release carrying ownership keys",
                            description="Exact test of a suspect model's answers to the key queries of KEYDIR. "
                                        "Exit codes: 0 the test ran, 2 bad input.")
    verify.add_argument("--keys", required=True, type=Path, metavar="KEYDIR", help="the key folder written by protect --keys")
    verify.add_argument("--predictions", type=Path, default=None, metavar="PRED.csv",
                        help="the suspect's answers: columns query,label and optionally p0,p1,... (one score per class)")
    verify.add_argument("--model", type=Path, default=None, metavar="FILE",
                        help="a TorchScript model you hold (input N x 1 x H x W in [0, 1], output N x C)")
    verify.add_argument("--release", type=Path, default=None, metavar="DIR",
                        help="the release folder, to check that the keys belong to it (manifest fingerprint)")
    verify.add_argument("--test", default="auto", choices=["auto", "labels", "label-ranks", "scores"],
                        help="auto: the score test when scores are given, else the label-rank test on the top-1 answers; "
                             "labels: the binomial test of the keys' majority answers (all exact; pick one before querying)")
    verify.add_argument("--json", action="store_true", help="print one JSON document to stdout")
    verify.set_defaults(handler=_cmd_verify)

    send = sub.add_parser("send", help="send a finished release's DICOM instances to a PACS; a rerun sends only what is missing")
    send.add_argument("release", type=Path, metavar="DIR", help="a release folder written by 'protect'")
    send.add_argument("--to", required=True, action="append", metavar="DEST", help="dicomweb:URL or dimse:AET@HOST:PORT")
    send.add_argument("--json", action="store_true", help="print one JSON document per destination to stdout")
    send.set_defaults(handler=_cmd_send)

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
                               "augmentation, with 10%% clean images mixed in, cnn blurring first) or names like vgg-adam-noaug,cnn-sgd-aug-median")
    evaluate.add_argument("--seeds", default="0", help="thief seeds, comma-separated (mean and range are reported)")
    evaluate.add_argument("--arch", default=None, help="legacy countermeasure check (with --defense): cnn | resnet | densenet")
    evaluate.add_argument("--epochs", type=int, default=20)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--defense", default=None, metavar="NAME",
                          help="a thief's countermeasure, applied to both training runs: none | augment | blur | median | "
                               "jpeg75 | jpeg10 | bitdepth | advtrain; several comma-separated (each run in turn), "
                               "combine with '+' (jpeg10+augment)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON document to stdout")
    evaluate.add_argument("--report", type=Path, default=None, metavar="RELEASE",
                          help="also put the verdict into the officer report of this finished release (its data and "
                               "manifest are not changed)")
    evaluate.add_argument("--utility", action="store_true",
                          help="also measure clinical utility: a model trained on the CLEAN training split, tested on "
                               "the clean and on the protected test images (--protected must hold a protected test "
                               "split: protect with --splits train,test)")
    evaluate.add_argument("--utility-augment", default="standard", choices=["standard", "texture", "consistency"],
                          help="the hospital model's recipe for --utility: standard (crop and flip), texture (also "
                               "random protection textures on half of its images, whatever their label, so that it "
                               "learns to ignore them) or consistency (every image and a textured copy, asked for the "
                               "same answer); docs/benchmarks.md, clinical utility")
    evaluate.set_defaults(handler=_cmd_evaluate)

    batch = sub.add_parser("batch", help="protect many folders from a TOML config; rerun the same command to resume",
                           description="Exit codes: 0 all done, 2 usage or configuration error, "
                                       "3 finished with some inputs skipped or failed, 130 cancelled (rerun to resume).")
    batch.add_argument("--config", required=True, type=Path, metavar="FILE", help="batch config (TOML), see docs/batch.md")
    batch.add_argument("--json", action="store_true", help="machine-readable progress: one JSON object per line on stdout")
    batch.add_argument("--cluster", metavar="SPEC", help="run the units on Dask: local:N (N worker processes, "
                       "local:N,memory=4GB), a scheduler address (tcp://HOST:8786) or a scheduler file; see docs/cluster.md")
    batch.add_argument("--threads", type=int, metavar="N", help="torch threads per unit (overrides the config's "
                       "threads; the same threads give the same bytes in the plain batch and on a cluster)")
    batch.add_argument("--cluster-timeout", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the scheduler (default 10)")
    batch.set_defaults(handler=_cmd_batch)

    return parser


def _cmd_inspect(args: argparse.Namespace) -> int:
    from salm_desktop.core.studies import LabelsError, inspect_paths

    import os

    paths = [Path(os.path.abspath(p.expanduser())) for p in args.paths]  # "a/../b" printed as "b"
    try:
        report = inspect_paths(paths, labels=args.labels)
    except (FileNotFoundError, LabelsError) as exc:  # a missing PATH or a bad labels source
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from salm_desktop.core.studies import format_inspect_report

        print(format_inspect_report(report))
    return EXIT_OK if report["series"] else EXIT_USAGE


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from salm_desktop.cli_evaluate import cmd_evaluate

    return cmd_evaluate(args)


def _cmd_protect(args: argparse.Namespace) -> int:
    pacs_wanted = args.send or args.study or args.series or args.accession or any(
        str(i).startswith(("dicomweb:", "dimse:")) for i in args.inputs)
    if pacs_wanted and not getattr(args, "_pacs_done", False):
        return _cmd_protect_pacs(args)
    args.inputs = [Path(p) for p in args.inputs]
    from salm_desktop.core.jobs import JobError, run_protect_job
    from salm_desktop.core.progress import Cancelled, Progress
    from salm_desktop.core.options import OptionError, build_settings, options_from_args

    try:
        settings, loader_labels = build_settings(options_from_args(args))
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
    release_info, efficacy = _release_record(args, efficacy)
    deid = _deid_options(args)
    if deid.keep_identity:
        print("salm-protect: WARNING: --keep-identity: the output keeps patient names, IDs and links to the originals; "
              "IDENTITY KEPT: not for release outside the hospital", file=sys.stderr)
    try:
        result = run_protect_job(args.inputs, args.out, settings, labels=loader_labels, splits=splits,
                                 report=not args.no_report, progress=progress, overwrite=args.overwrite, roi=args.roi,
                                 efficacy=efficacy, deid=deid, steward_record=args.steward_record,
                                 keys=args.keys, release_info=release_info)
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
        print(s.get("deidentification", "") + ("" if deid.keep_identity else
              f"; private steward record (keep it inside the hospital): {result.steward_record}"))
        if result.officer_pdf or result.officer_html:
            print(f"release record for the data-protection officer: {result.officer_pdf or result.officer_html}")
        if args.keys is not None:
            print(f"ownership keys written to {args.keys}: keep this folder private and outside the release")
    if args.keys is not None:  # measured, not assumed: docs/ownership.md
        from salm_desktop.core.ownership.release import KEYS_COST

        print(f"warning: ownership keys are experimental and weaken the protection ({KEYS_COST}; docs/ownership.md)",
              file=sys.stderr)
    return EXIT_PARTIAL if result.skipped else EXIT_OK


def _add_release_record_options(protect: argparse.ArgumentParser) -> None:
    """Issue 15: who made the release and why, and the protection evaluation, for the officer report."""
    group = protect.add_argument_group("release record", "what goes into officer-report.pdf (page 1 is signed by the "
                                       "data-protection officer; docs/report.md)")
    group.add_argument("--operator", default="", metavar="NAME", help="who made the release (printed in the officer report)")
    group.add_argument("--purpose", default="", metavar="TEXT", help="what the release is for (printed in the officer report)")
    group.add_argument("--evaluate", action="store_true",
                       help="labelled data (one npz with train/test splits, or a train/ test/ image tree): train thief "
                            "models on the protected copy before it is put in place and put the verdict in the report")
    group.add_argument("--evaluate-thieves", default=None, metavar="NAMES",
                       help="thieves for --evaluate (default: cnn-sgd-aug, a small fast check; 'suite' for the full one)")
    group.add_argument("--evaluate-epochs", type=int, default=None, metavar="N", help="epochs per thief for --evaluate (default 5)")


def _release_record(args: argparse.Namespace, efficacy):  # noqa: ANN001, ANN202
    """(ReleaseInfo, efficacy or an evaluation to run inside the job); UsageError before any work."""
    from salm_desktop.core.export.officer_report import ReleaseInfo

    info = ReleaseInfo(args.operator, args.purpose)
    if not args.evaluate:
        if args.evaluate_thieves or args.evaluate_epochs:
            raise UsageError("--evaluate-thieves/--evaluate-epochs need --evaluate")
        return info, efficacy
    from salm_desktop.core.evaluate.release_check import QUICK_EPOCHS, QUICK_THIEVES, ReleaseEvaluation

    if efficacy is not None:
        raise UsageError("--evaluate and --efficacy both give the evaluation: use one")
    if len(args.inputs) != 1:
        raise UsageError("--evaluate needs exactly one labelled input (an npz with train and test splits, or a folder "
                         "with train/ and test/ class folders)")
    evaluation = ReleaseEvaluation(Path(args.inputs[0]), args.evaluate_thieves or QUICK_THIEVES,
                                   args.evaluate_epochs if args.evaluate_epochs is not None else QUICK_EPOCHS)
    try:
        evaluation.check()
    except ValueError as exc:
        raise UsageError(f"--evaluate: {exc}") from None
    return info, evaluation


def _deid_options(args: argparse.Namespace):
    from salm_desktop.core.export.deid import DeidOptions

    return DeidOptions(keep_identity=args.keep_identity, retain_dates=args.retain_dates,
                       retain_patient_characteristics=args.retain_patient_characteristics,
                       retain_device_identity=args.retain_device_identity, clean_descriptors=args.clean_descriptions,
                       retain_safe_private=args.retain_safe_private, allow_burned_in=args.allow_burned_in, secret=args.secret)


def _cmd_verify(args: argparse.Namespace) -> int:
    from salm_desktop.cli_evaluate import cmd_verify

    return cmd_verify(args)


def _cmd_protect_pacs(args: argparse.Namespace) -> int:
    from salm_desktop.cli_pacs import cmd_protect_pacs

    return cmd_protect_pacs(args)


def _cmd_send(args: argparse.Namespace) -> int:
    from salm_desktop.cli_pacs import cmd_send

    return cmd_send(args)


def _cmd_batch(args: argparse.Namespace) -> int:
    from salm_desktop.cli_batch import cmd_batch

    return cmd_batch(args)


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
