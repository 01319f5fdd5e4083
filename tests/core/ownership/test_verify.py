"""verify: the exact test on a keyed release's queries, and clear messages for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from salm_desktop import cli
from salm_desktop.core.ownership.keydir import read_keydir
from salm_desktop.core.ownership.keys import DEFAULT_KEYS
from salm_desktop.core.ownership.verify import VerifyError, evaluate, verify



def answer_like_a_thief(record, correct: bool = True):
    """Answers a model that learned the keys perfectly would give (+ query: the secret label)."""
    from salm_desktop.core.ownership.verify import Answers

    labels = {}
    for qid, key, sign in zip(record.query_ids, record.query_keys, record.query_signs):
        secret = int(record.labels[key]) if correct else 1 - int(record.labels[key])
        labels[qid] = secret if sign > 0 else 1 - secret
    return Answers(labels)


def write_csv(path: Path, rows: list[tuple]) -> Path:
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows) + "\n", encoding="utf-8")
    return path


def _csv_from(record, answers, path, scores=False):
    rows = [("query", "label", "p0", "p1") if scores else ("query", "label")]
    for qid in record.query_ids:
        lab = answers.labels[qid]
        rows.append((qid, lab, 1.0 - lab, float(lab)) if scores else (qid, lab))
    return write_csv(path, rows)


def test_a_model_that_learned_the_keys_is_flagged_and_one_that_did_not_is_not(keyed_release, tmp_path):
    record = read_keydir(keyed_release["keys"])
    good = evaluate(record, answer_like_a_thief(record), test="labels")
    assert good["hits"] == good["keys"] == DEFAULT_KEYS and good["p_value"] == 2.0**-DEFAULT_KEYS
    assert "strong evidence" in good["verdict"].lower()
    wrong = evaluate(record, answer_like_a_thief(record, correct=False), test="labels")
    assert wrong["hits"] == 0 and wrong["p_value"] == 1.0 and "no evidence" in wrong["verdict"].lower()
    # top-1 answers without scores: "auto" is the label-rank test; perfect answers give the smallest p it can
    # (each of the 19,999 redraws matches the secret labels with probability 2**-16), all-wrong answers p = 1
    ranked = evaluate(record, answer_like_a_thief(record))
    assert ranked["p_value"] == ranked["p_value_label_ranks"] and 1 / 20000 <= ranked["p_value"] <= 5 / 20000
    assert ranked["p_value_labels"] == 2.0**-DEFAULT_KEYS and ranked["test"].startswith("label ranks")
    assert evaluate(record, answer_like_a_thief(record, correct=False))["p_value"] == 1.0
    # a constant model never flips between the + and - query: no key is informative, p = 1 for both label tests
    constant_answers = type(answer_like_a_thief(record))({q: 1 for q in record.query_ids})
    constant = evaluate(record, constant_answers, test="labels")
    assert constant["keys"] == 0 and constant["p_value"] == 1.0
    assert evaluate(record, constant_answers)["p_value"] == 1.0


def test_the_label_rank_test_is_exact_for_a_model_that_never_saw_the_keys(keyed_release):
    """Answers that ignore the secret labels (random top-1 answers): P(p <= a) <= a, here at a = 0.1 over 200 models."""
    from salm_desktop.core.ownership.verify import Answers

    record = read_keydir(keyed_release["keys"])
    rng = np.random.default_rng(7)
    ps = []
    for _ in range(200):
        bias = rng.random(record.count)  # each key its own (label-independent) chance of answering class 1
        labels = {q: int(rng.random() < bias[key]) for q, key in zip(record.query_ids, record.query_keys)}
        ps.append(evaluate(record, Answers(labels))["p_value"])
    # Binomial(200, 0.1) exceeds 32 with probability < 0.002
    assert sum(p <= 0.1 for p in ps) <= 32


def test_cli_verify_json_with_labels_and_with_scores(keyed_release, tmp_path, capsys):
    record = read_keydir(keyed_release["keys"])
    pred = _csv_from(record, answer_like_a_thief(record), tmp_path / "pred.csv")
    assert cli.main(["verify", "--keys", str(keyed_release["keys"]), "--predictions", str(pred), "--json",
                     "--release", str(keyed_release["out"])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hits"] == out["keys"] == DEFAULT_KEYS and out["p_value_labels"] == 2.0**-DEFAULT_KEYS and out["release_checked"]
    assert out["p_value"] == out["p_value_label_ranks"] and 1 / 20000 <= out["p_value"] <= 5 / 20000
    scored = _csv_from(record, answer_like_a_thief(record), tmp_path / "scored.csv", scores=True)
    assert cli.main(["verify", "--keys", str(keyed_release["keys"]), "--predictions", str(scored), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # perfect answers: only the true labels reach T, and each redraw hits them with probability 2**-16, so the
    # p-value is (1 + Binomial(19999, 2**-16)) / 20000 -- at most 5 / 20000 except with probability < 1e-5
    assert out["p_value"] == out["p_value_scores"] and 1 / 20000 <= out["p_value"] <= 5 / 20000
    assert cli.main(["verify", "--keys", str(keyed_release["keys"]), "--predictions", str(pred)]) == 0
    text = capsys.readouterr().out
    assert "Cautions" in text and "Bonferroni" in text


@pytest.mark.parametrize("case,message", [
    ("missing", "have no answer"),
    ("unknown", "unknown query id"),
    ("columns", "needs the columns"),
    ("label", "not one of the 2 classes"),
    ("partial_scores", "score columns must be all of"),
])
def test_bad_predictions_files_get_a_clear_message(keyed_release, tmp_path, capsys, case, message):
    record = read_keydir(keyed_release["keys"])
    rows = [("query", "label")] + [(q, 0) for q in record.query_ids]
    if case == "missing":
        rows = rows[:-3]
    elif case == "unknown":
        rows.append(("k999-b00-g0-p", 1))
    elif case == "columns":
        rows[0] = ("id", "answer")
    elif case == "label":
        rows[1] = (rows[1][0], 7)
    elif case == "partial_scores":
        rows = [("query", "label", "p0")] + [(q, 0, 0.5) for q in record.query_ids]
    pred = write_csv(tmp_path / "pred.csv", rows)
    assert cli.main(["verify", "--keys", str(keyed_release["keys"]), "--predictions", str(pred)]) == 2
    err = capsys.readouterr().err
    assert message in err and "pred.csv" in err and "Traceback" not in err


def test_keys_inside_a_release_or_from_another_release_are_refused(keyed_release, tmp_path):
    record = read_keydir(keyed_release["keys"])
    pred = _csv_from(record, answer_like_a_thief(record), tmp_path / "pred.csv")
    other = tmp_path / "other_release"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"another": "release"}))
    with pytest.raises(VerifyError, match="belongs to another release"):
        verify(keyed_release["keys"], predictions=pred, release=other)
    inside = other / "keys"
    shutil.copytree(keyed_release["keys"], inside)
    with pytest.raises(VerifyError, match="inside the release"):
        verify(inside, predictions=pred)
    with pytest.raises(ValueError, match="not a key folder"):
        verify(tmp_path, predictions=pred)


def test_a_torchscript_model_is_queried_and_a_broken_model_file_is_refused(keyed_release, tmp_path, capsys):
    from salm_desktop.core.ownership.shadow import train_model

    with np.load(keyed_release["out"] / "breast48.npz") as rel:
        images, labels = rel["train_images"], rel["train_labels"]
    model = train_model(images, labels, arch="cnn", epochs=1, seed=0)
    path = tmp_path / "thief.pt"
    torch.jit.trace(model, torch.zeros(2, 1, 28, 28)).save(str(path))
    assert cli.main(["verify", "--keys", str(keyed_release["keys"]), "--model", str(path), "--json", "--test", "labels"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 < out["p_value"] <= 1 and out["keys_total"] == DEFAULT_KEYS and 0 <= out["hits"] <= out["keys"]
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    assert cli.main(["verify", "--keys", str(keyed_release["keys"]), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.pt" in err and "TorchScript" in err
    assert cli.main(["verify", "--keys", str(keyed_release["keys"])]) == 2
    assert "exactly one of" in capsys.readouterr().err
