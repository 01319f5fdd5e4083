"""salm-protect evaluate and verify: models measured against data (the parser is in cli.py).

``evaluate`` trains a fresh thief on protected and on clean data; ``verify`` tests a suspect model
against the ownership keys of a release.
"""

from __future__ import annotations

import argparse
import json
import sys

from salm_desktop.cli import EXIT_OK, UsageError


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.defense is None and args.arch is None:
        return _cmd_evaluate_suite(args)
    if args.report is not None:
        raise UsageError("--report takes the thief suite's verdict: leave out --defense/--arch")
    return _cmd_evaluate_legacy(args)


def _evaluation_splits(args: argparse.Namespace):
    """(protected train, clean train, clean test) of ``evaluate``, checked to have one image size."""
    from salm_desktop.core.evaluate import load_split

    try:
        protected = load_split(args.protected, "train")
        clean_train = load_split(args.clean, "train")
        clean_test = load_split(args.clean, "test")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if protected[0].shape[1:] != clean_test[0].shape[1:]:
        raise UsageError(f"{args.protected}: image size {protected[0].shape[1:]} differs from the clean test split {clean_test[0].shape[1:]}")
    return protected, clean_train, clean_test


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
    protected, clean_train, clean_test = _evaluation_splits(args)
    if args.report is not None and not (args.report / "manifest.json").is_file():  # before hours of training
        raise UsageError(f"--report: {args.report}: not a finished release (no manifest.json)")
    try:
        clean_val = load_split(args.clean, "val")
    except ValueError:
        clean_val = None  # the suite holds out part of the clean training split instead
    if protected[0].ndim != 3:
        raise UsageError(f"{args.protected}: the thief suite evaluates 2D grey images only")

    def show(tag: str, epoch: int, epochs: int, m: dict) -> None:
        if not args.json:
            print(f"  {tag} epoch {epoch}/{epochs}: ranking power {m['rank_power']:.3f} balanced {m['balanced_acc']:.3f}",
                  file=sys.stderr)

    # the clinical-utility block comes first, so that the verdict stays the last line
    utility = _clinical_utility(args, "cnn", clean_train, clean_test) if args.utility else None
    res = evaluate_suite(protected, clean_train, clean_val, clean_test, recipes, seeds, progress=show)
    if utility is not None:
        res["utility"] = utility  # one JSON document stays one document
    if args.report is not None:  # issue 15: fold this run into the release's officer report
        from salm_desktop.core.export.officer_report import fold_in_evaluation

        try:
            written = fold_in_evaluation(args.report, res)
        except ValueError as exc:
            raise UsageError(f"--report: {exc}") from None
        print(f"officer report updated: {written['officer_pdf']}", file=sys.stderr)
    if args.json:
        print(json.dumps(res))
    else:
        print(format_suite(res))
        print(verdict_line(res["verdict"]))
    return EXIT_OK


def _cmd_evaluate_legacy(args: argparse.Namespace) -> int:
    """The countermeasure check (--defense): the earlier attackers (docs/robustness.md)."""
    from salm_desktop.core.evaluate import ARCHS, evaluate_efficacy
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
    protected, clean_train, clean_test = _evaluation_splits(args)

    def show(ev) -> None:  # noqa: ANN001
        if ev.stage == "evaluate" and not args.json:
            print(f"  {ev.message}: acc {ev.metrics.get('acc', 0):.3f} balanced {ev.metrics.get('balanced_acc', 0):.3f} "
                  f"AUC {ev.metrics.get('auc', 0):.3f}", file=sys.stderr)

    utility = _clinical_utility(args, archs[0], clean_train, clean_test) if args.utility else None
    results = []
    for arch in archs:
        for defense in defenses:
            res = evaluate_efficacy(protected, clean_train, clean_test, arch=arch, epochs=args.epochs, seed=args.seed,
                                    defense=defense, progress=Progress(show))
            results.append(res)
    if utility is not None:
        results[0]["utility"] = utility  # one JSON document stays one document
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


def _clinical_utility(args: argparse.Namespace, arch: str, clean_train, clean_test) -> dict:  # noqa: ANN001
    """``evaluate --utility``: the hospital's clean-trained model on clean vs protected test images."""
    from salm_desktop.core.evaluate import load_split
    from salm_desktop.core.evaluate.utility import evaluate_utility

    try:
        protected_test = load_split(args.protected, "test")
        augment, textures = args.utility_augment, None
        if augment != "standard":
            from salm_desktop.core.protect.salm_texture import unlabelled_textures as textures
        utility = evaluate_utility(clean_train, clean_test, protected_test, arch=arch, epochs=args.epochs, seed=args.seed,
                                   augment=augment, textures=textures)
    except ValueError as exc:
        raise UsageError(f"--utility: {exc}") from exc
    if utility["protected_test_is_unchanged"]:
        print(f"warning: the test split of {args.protected} is not protected (identical to the clean one); "
              "protect with --splits train,test to measure clinical utility", file=sys.stderr)
    if not args.json:
        c, p = utility["clean"], utility["protected"]
        verdict = "met" if utility["targets"]["met"] else "MISSED"
        recipe = {"texture": "crop, flip and texture augmentation",
                  "consistency": "crop, flip and texture consistency"}.get(utility["augment"], "crop and flip")
        print(f"clinical utility: hospital model ({arch}, trained on clean data with {recipe}, {utility['epochs']} epochs) on "
              f"{utility['test_samples']} test images\n"
              f"  clean test      AUC {c['auc']:.4f}  balanced {c['balanced_acc']:.4f}\n"
              f"  protected test  AUC {p['auc']:.4f}  balanced {p['balanced_acc']:.4f}   (AUC change {utility['auc_change']:+.4f})\n"
              f"  identical predictions {utility['identical_predictions']:.2%} ({utility['changed_predictions']} changed); "
              f"target AUC within {utility['targets']['auc_within']}, >= {utility['targets']['identical_at_least']:.0%}: {verdict}")
    return utility


def cmd_verify(args: argparse.Namespace) -> int:
    from salm_desktop.core.ownership.verify import verify

    if (args.predictions is None) == (args.model is None):
        raise UsageError("verify needs exactly one of --predictions PRED.csv or --model FILE")
    try:
        out = verify(args.keys, predictions=args.predictions, model=args.model, release=args.release, test=args.test)
    except ValueError as exc:  # VerifyError, KeyDirError: one line naming the file and the reason
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(out))
        return EXIT_OK
    print(out["verdict"])
    print(f"  {out['test']}")
    print(f"  hits {out['hits']} of {out['keys']} informative keys ({out['keys_total']} keys), chance {out['chance_per_key']} "
          f"per key; label-test p = {out['p_value_labels']:.3g}"
          + (f"; score-test p = {out['p_value_scores']:.3g}" if "p_value_scores" in out else ""))
    if not out["release_checked"]:
        print("  (the release fingerprint was not checked; pass --release DIR to check it)")
    print("Cautions:")
    for line in out["cautions"]:
        print(f"  - {line}")
    return EXIT_OK
