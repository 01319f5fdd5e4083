"""protect --keys end to end on a BreastMNIST subset: KEYDIR contents, the release, the report."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from salm_desktop.core.jobs import JobError, run_protect_job
from salm_desktop.core.ownership.keydir import read_keydir
from salm_desktop.core.ownership.keys import DEFAULT_KEYS, QUERY_BASES, QUERY_GAINS


def test_keydir_holds_queries_labels_seed_fingerprint_and_a_readme(keyed_release):
    keys, out = keyed_release["keys"], keyed_release["out"]
    assert sorted(p.name for p in keys.iterdir()) == ["README.txt", "keys.json", "queries", "queries.npz"]
    doc = json.loads((keys / "keys.json").read_text())
    assert doc["release_fingerprint"] == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    assert isinstance(doc["secret_seed"], int) and doc["secret_seed"] != keyed_release["settings"].seed
    assert len(doc["secret_labels"]) == doc["keys"] == DEFAULT_KEYS and set(doc["secret_labels"]) <= {0, 1}
    with np.load(keyed_release["input"]) as src, np.load(keys / "queries.npz") as q:
        assert q["images"].dtype == src["train_images"].dtype and q["images"].shape[1:] == src["train_images"].shape[1:]
        assert list(q["ids"]) == [e["id"] for e in doc["queries"]]
        first = q["images"][0]
        ids = list(q["ids"])
    pngs = sorted((keys / "queries").glob("*.png"))
    assert len(pngs) == len(ids)
    with Image.open(keys / "queries" / f"{ids[0]}.png") as im:
        assert np.array_equal(np.asarray(im), first)
    readme = (keys / "README.txt").read_text().lower()
    assert "private" in readme and "verify" in readme
    record = read_keydir(keys)
    assert record.count == DEFAULT_KEYS and len(record.query_ids) == len(ids) == DEFAULT_KEYS * QUERY_BASES * len(QUERY_GAINS) * 2


def test_query_files_are_pairs_of_a_data_set_image_with_and_without_a_key_texture(keyed_release):
    keys = keyed_release["keys"]
    doc = json.loads((keys / "keys.json").read_text())
    assert len(doc["design"]["key_frequencies"]) == DEFAULT_KEYS
    with np.load(keyed_release["input"]) as src, np.load(keys / "queries.npz") as q:
        train = src["train_images"].astype(int)
        images = q["images"].astype(int)
    info = doc["queries"]
    assert [e["sign"] for e in info[:4]] == [1, -1, 1, -1]
    for a in range(0, len(info), 2):
        plus, minus = images[a], images[a + 1]
        assert info[a]["key"] == info[a + 1]["key"] and info[a]["base"] == info[a + 1]["base"]
        assert any(np.array_equal(minus, t) for t in train)  # the '-' query is one of the data set's own images
        gain = info[a]["gain"] * 255
        assert np.abs(plus - minus).max() <= round(gain) + 1
        assert np.mean(plus != minus) > 0.3  # the key's texture covers the image


def test_the_release_says_it_carries_keys_but_never_points_to_them(keyed_release):
    out, keys = keyed_release["out"], keyed_release["keys"]
    doc = json.loads((keys / "keys.json").read_text())
    texts = {p.name: p.read_text(errors="ignore") for p in out.iterdir() if p.suffix in (".json", ".html")}
    assert "carries ownership keys" in texts["report.html"]
    for text in texts.values():
        assert str(keys) not in text
        assert str(keys.parent) not in text
        assert str(doc["secret_seed"]) not in text
        assert json.dumps(doc["secret_labels"]) not in text
    assert keyed_release["result"].summary["ownership_keys"]
    # the officer who signs the release is told that it carries keys and what they cost the protection
    from salm_desktop.core.export.officer_report import read_officer_data

    rows = dict(row for _, section in read_officer_data(out)["page1"] for row in section)
    assert "weakens the protection" in rows["Ownership keys"] and str(keys) not in rows["Ownership keys"]


def test_the_mark_stays_inside_the_budget_of_the_protection(keyed_release):
    with np.load(keyed_release["input"]) as src, np.load(keyed_release["out"] / "breast48.npz") as rel:
        change = np.abs(rel["train_images"].astype(int) - src["train_images"].astype(int))
        assert change.max() <= 8  # epsilon 8/255 of uint8
        assert np.array_equal(rel["test_images"], src["test_images"])  # the test split is copied unchanged


def test_keydir_inside_the_release_or_not_empty_is_refused(keyed_release, tmp_path):
    src = keyed_release["input"]
    settings = keyed_release["settings"]
    out = tmp_path / "rel"
    with pytest.raises(JobError, match="inside the release"):
        run_protect_job([src], out, settings, keys=out / "keys")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("x")
    with pytest.raises(JobError, match="not empty"):
        run_protect_job([src], out, settings, keys=tmp_path / "used")
    with pytest.raises(JobError, match="input"):
        run_protect_job([src.parent], out, settings, keys=src.parent / "keys")
    assert not out.exists()
