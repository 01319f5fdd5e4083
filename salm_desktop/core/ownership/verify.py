"""Verify a suspect model against a KEYDIR: read its answers, run the exact test, say what it means."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .keydir import KeyDirError, KeyRecord, manifest_fingerprint, read_keydir
from .stats import binomial_tail, centered_ranks, score_test

CAUTIONS = (
    "The p-value is exact only for the first test of a model with these keys, chosen before looking at its answers: "
    "do not re-draw keys, re-query or pick the better of several runs.",
    "When several models (or several key sets) are tested, correct for the number of tests, e.g. multiply each p-value "
    "by the number of tests (Bonferroni).",
    "A small p-value shows that the model's answers depend on these secret labels, i.e. that it learned from the keyed "
    "release or from data derived from it. A large p-value does not prove innocence: a model may have learned too little "
    "of the mark (heavy preprocessing, or few training images from the release).",
    "Never share this key folder or re-use its keys for another release.",
)


#: the tests ``evaluate`` runs; "auto" picks scores when the answers have them, else label ranks
TESTS = ("auto", "labels", "label-ranks", "scores")


class VerifyError(ValueError):
    """Bad input to verify; the message names the file and the reason."""


@dataclass
class Answers:
    labels: dict[str, int]
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def read_predictions(path: Path, record: KeyRecord) -> Answers:
    """Read PRED.csv (columns ``query,label`` and optionally ``p0,p1,...``); every query id exactly once."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except FileNotFoundError:
        raise VerifyError(f"{path}: predictions file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise VerifyError(f"{path}: not a readable CSV file ({exc.__class__.__name__})") from None
    if "query" not in fields or "label" not in fields:
        raise VerifyError(f"{path}: needs the columns 'query' and 'label' (has {', '.join(fields) or 'none'})")
    c = record.n_classes
    score_cols = [f"p{i}" for i in range(c)]
    has_scores = any(f in fields for f in score_cols)
    if has_scores and not all(f in fields for f in score_cols):
        raise VerifyError(f"{path}: score columns must be all of {', '.join(score_cols)} (one per class)")
    known = set(record.query_ids)
    answers = Answers({})
    unknown, duplicate = [], []
    for n, row in enumerate(rows, start=2):
        qid = row["query"]
        if qid not in known:
            unknown.append(qid)
            continue
        if qid in answers.labels:
            duplicate.append(qid)
            continue
        try:
            label = int(float(row["label"]))
        except ValueError:
            raise VerifyError(f"{path}, line {n}: label {row['label']!r} of query {qid} is not a class number") from None
        if not 0 <= label < c:
            raise VerifyError(f"{path}, line {n}: label {label} of query {qid} is not one of the {c} classes 0..{c - 1}")
        answers.labels[qid] = label
        if has_scores:
            try:
                answers.scores[qid] = np.asarray([float(row[f]) for f in score_cols])
            except ValueError:
                raise VerifyError(f"{path}, line {n}: scores of query {qid} are not numbers") from None
    if unknown:
        raise VerifyError(f"{path}: {len(unknown)} unknown query id(s), e.g. {', '.join(unknown[:3])} "
                          f"(are these the answers to another key folder?)")
    if duplicate:
        raise VerifyError(f"{path}: query id(s) answered more than once: {', '.join(duplicate[:3])}")
    missing = [q for q in record.query_ids if q not in answers.labels]
    if missing:
        raise VerifyError(f"{path}: {len(missing)} of {len(record.query_ids)} queries have no answer, "
                          f"e.g. {', '.join(missing[:3])}; answer every query once")
    return answers


def answers_from_model(model_path: Path, record: KeyRecord) -> Answers:
    """Run a TorchScript model (input N x 1 x H x W in the normalized [0, 1] scale, output N x C logits)."""
    import torch

    model_path = Path(model_path)
    if not model_path.is_file():
        raise VerifyError(f"{model_path}: model file not found")
    try:
        model = torch.jit.load(str(model_path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's file
        raise VerifyError(f"{model_path}: not a loadable TorchScript model ({exc.__class__.__name__}); "
                          "save it with torch.jit.script(model).save(...) or answer the queries in a CSV") from None
    low, high = record.meta.get("intensity_window", [0.0, 255.0])
    x = (record.images().astype(np.float32) - float(low)) / (float(high) - float(low))
    x = torch.from_numpy(np.clip(x, 0.0, 1.0)).unsqueeze(1)
    try:
        with torch.no_grad():
            logits = model(x)
    except Exception as exc:  # noqa: BLE001
        raise VerifyError(f"{model_path}: the model failed on the {len(x)} key queries "
                          f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != len(x):
        raise VerifyError(f"{model_path}: expected one row of class scores per query, got {getattr(logits, 'shape', type(logits))}")
    if logits.shape[1] != record.n_classes:
        raise VerifyError(f"{model_path}: the model has {logits.shape[1]} outputs, the keys have {record.n_classes} classes")
    probs = torch.softmax(logits.float(), 1).numpy()
    return Answers({q: int(p.argmax()) for q, p in zip(record.query_ids, probs)},
                   {q: p.astype(np.float64) for q, p in zip(record.query_ids, probs)})


def check_release(record: KeyRecord, release: Path) -> None:
    """The keys must belong to ``release`` (its manifest's sha256) and lie outside it."""
    release = Path(release).expanduser()
    manifest = release / "manifest.json" if release.is_dir() else release
    if not manifest.is_file():
        raise VerifyError(f"{release}: no manifest.json (not a SALM Desktop release)")
    try:
        record.path.resolve().relative_to(manifest.parent.resolve())
        raise VerifyError(f"key folder {record.path} is inside the release {manifest.parent}: "
                          "keys must never travel with the release; move them out and treat them as exposed")
    except ValueError:
        pass
    if manifest_fingerprint(manifest) != record.fingerprint:
        raise VerifyError(f"key folder {record.path} belongs to another release (fingerprint {record.fingerprint[:12]}..., "
                          f"{manifest} has {manifest_fingerprint(manifest)[:12]}...)")


def keydir_inside_a_release(keydir: Path) -> Path | None:
    """The release folder (one with manifest.json) that contains ``keydir``, if any."""
    for parent in Path(keydir).expanduser().resolve().parents:
        if (parent / "manifest.json").is_file():
            return parent
    return None


def evaluate(record: KeyRecord, answers: Answers, test: str = "auto") -> dict[str, Any]:
    """The exact tests. Each key has pairs of queries (base + pattern, base); a pair whose two answers differ votes for
    its + answer. A key with a unique majority is informative, and a hit when the majority is its secret label. Under
    the null hypothesis the secret labels are uniform and independent of the answers, so hits ~ Binomial(informative
    keys, 1/C) exactly (given which keys are informative, a function of the answers): the binomial label test.

    ``test``: "scores" (needs scores), "labels" (the binomial), "label-ranks" (the rank test of the score test on the
    top-1 answers: per key and class the + answers minus the - answers, ranked over the keys; exact for the same
    reason) or "auto": scores when the answers have them, else label ranks. The rule is fixed before any answer is
    seen; the label-rank test is the default for top-1 answers because thieves push every texture towards one class,
    which leaves most keys' majority at that class (binomial: 1 of 12 augmenting thieves at p <= 0.01 in the
    2026-12-03 benchmark, label ranks 4 of 12; docs/ownership.md)."""
    k, c = record.count, record.n_classes
    n_pairs = int(record.query_pairs.max()) + 1 if len(record.query_pairs) else 0
    plus = np.full(n_pairs, -1)
    minus = np.full(n_pairs, -1)
    pair_key = np.zeros(n_pairs, dtype=np.int64)
    s_plus = np.zeros((n_pairs, c))
    s_minus = np.zeros((n_pairs, c))
    for qid, key, sign, pair in zip(record.query_ids, record.query_keys, record.query_signs, record.query_pairs):
        pair_key[pair] = key
        (plus if sign > 0 else minus)[pair] = answers.labels[qid]
        if answers.scores:
            (s_plus if sign > 0 else s_minus)[pair] = answers.scores[qid]
    votes = np.zeros((k, c))
    flipped = plus != minus
    np.add.at(votes, (pair_key[flipped], plus[flipped]), 1)
    top = votes.max(1)
    informative = (top > 0) & ((votes == top[:, None]).sum(1) == 1)  # a unique majority
    answer = votes.argmax(1)
    hits = int(np.count_nonzero(informative & (answer == record.labels)))
    n_inf = int(np.count_nonzero(informative))
    key_scores = np.zeros((k, c))
    np.add.at(key_scores, pair_key, s_plus - s_minus)
    net_votes = np.zeros((k, c))  # per key and class: + answers minus - answers
    np.add.at(net_votes, (pair_key, plus), 1)
    np.add.at(net_votes, (pair_key, minus), -1)
    p_labels = binomial_tail(hits, n_inf, Fraction(1, c))
    p_label_ranks = score_test(centered_ranks(net_votes), record.labels)
    if test not in TESTS:
        raise VerifyError(f"unknown test {test!r}; choose {', '.join(TESTS)}")
    if test == "scores" and not answers.scores:
        raise VerifyError("the score test needs score columns p0,p1,... (or --model)")
    if test == "auto":
        test = "scores" if answers.scores else "label-ranks"
    out: dict[str, Any] = {"keys": n_inf, "keys_total": k, "hits": hits, "classes": c, "p_value_labels": p_labels,
                           "p_value_label_ranks": p_label_ranks, "chance_per_key": f"1/{c}"}
    if test == "scores":
        p_scores = score_test(centered_ranks(key_scores), record.labels)
        out.update(p_value=p_scores, p_value_scores=p_scores, test="scores: randomization test of the keys' ranks by "
                   "summed score difference at the secret labels (exact, 19,999 redraws)")
    elif test == "label-ranks":
        out.update(p_value=p_label_ranks, test="label ranks: randomization test of the keys' ranks by the net top-1 "
                   f"answers at the secret labels (exact, 19,999 redraws; binomial: {hits} hits of {n_inf} "
                   f"informative keys, p = {p_labels:.2g})")
    else:
        out.update(p_value=p_labels, test=f"labels: exact binomial tail, {hits} hits of {n_inf} informative keys at chance 1/{c}")
    out["verdict"] = verdict(out["p_value"])
    out["cautions"] = list(CAUTIONS)
    return out


def verdict(p: float) -> str:
    if p <= 0.001:
        return (f"Very strong evidence (p = {p:.2g}) that this model was trained on the keyed release or on data derived from it.")
    if p <= 0.01:
        return f"Strong evidence (p = {p:.2g}) that this model was trained on the keyed release or on data derived from it."
    if p <= 0.05:
        return f"Weak evidence (p = {p:.2g}): the answers match the secret labels somewhat more often than chance."
    return (f"No evidence (p = {p:.2g}) that this model learned the keys. This does not show that the release was not used.")


def verify(keydir: Path, *, predictions: Path | None = None, model: Path | None = None, release: Path | None = None,
           test: str = "auto") -> dict[str, Any]:
    """The whole check (CLI and GUI). Raises VerifyError / KeyDirError (both ValueError) with one line."""
    inside = keydir_inside_a_release(keydir)
    if inside is not None:
        raise VerifyError(f"key folder {keydir} lies inside the release {inside}: keys must never travel with the release; "
                          "move them out and treat them as exposed")
    record = read_keydir(keydir)
    if release is not None:
        check_release(record, release)
    if (predictions is None) == (model is None):
        raise VerifyError("give either a predictions CSV or a model file")
    answers = read_predictions(predictions, record) if predictions is not None else answers_from_model(model, record)
    out = evaluate(record, answers, test)
    out["release_fingerprint"] = record.fingerprint
    out["release_checked"] = release is not None
    return out


__all__ = ["Answers", "CAUTIONS", "TESTS", "KeyDirError", "VerifyError", "answers_from_model", "evaluate", "read_predictions",
           "verdict", "verify"]
