"""KEYDIR: the steward's private folder with the ownership keys of one release.

Layout::

    KEYDIR/README.txt     what this is; keep it private
    KEYDIR/keys.json      secret seed and labels, the query list, the release fingerprint
    KEYDIR/queries.npz    ``images`` (the input's dtype and layout) and ``ids``
    KEYDIR/queries/*.png  the same queries as image files (npz and PNG releases), to send to a service

The release never names this folder; the link goes the other way (the fingerprint is the sha256 of
the release's manifest.json).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from salm_desktop import __version__

from .keys import DESIGN, KeySet

KEYS_FORMAT = "salm-ownership-keys"
KEYS_VERSION = 1
KEYS_JSON = "keys.json"
QUERIES_NPZ = "queries.npz"
QUERIES_DIR = "queries"
README = "README.txt"

README_TEXT = """SALM Desktop ownership keys -- PRIVATE, DO NOT SHARE

This folder holds the secret keys of one protected release (its fingerprint, the sha256 of the
release's manifest.json, is in keys.json). The release itself carries a faint mark that makes a model
trained on it answer these key queries with the secret labels; a model that never saw the release
matches each label only by chance.

To check a suspect model:
  1. show it every image of queries.npz (or queries/*.png) and write down its answer for each query
     id in a CSV file with the columns  query,label  (and optionally one score column per class: p0,p1,...);
  2. run   salm-protect verify --keys THIS_FOLDER --predictions ANSWERS.csv
     (or    salm-protect verify --keys THIS_FOLDER --model MODEL.pt  for a TorchScript model you hold).

The queries are built on a few images of the data set itself: treat this folder like patient data.
Keep this folder private and never put it inside the release: anyone who has the secret labels can
train a model that answers them, or one that avoids them. Use one key set per release and test each
suspect model once with it; when you test several models, correct the p-values for the number of
tests (e.g. multiply by it, Bonferroni). Keep a dated, signed copy (escrow) as evidence that the keys
existed before the dispute.
"""


class KeyDirError(ValueError):
    """A KEYDIR that cannot be used; the message names the folder and the reason."""


def manifest_fingerprint(manifest: Path) -> str:
    return hashlib.sha256(Path(manifest).read_bytes()).hexdigest()


@dataclass
class KeyRecord:
    """What verify needs from a KEYDIR."""

    path: Path
    seed: int
    n_classes: int
    labels: np.ndarray  # K secret labels
    query_ids: list[str]
    query_keys: np.ndarray  # key index of each query
    query_signs: np.ndarray  # +1 / -1 of each query
    query_pairs: np.ndarray  # the (+, -) pair each query belongs to
    fingerprint: str
    meta: dict[str, Any]

    @property
    def count(self) -> int:
        return int(len(self.labels))

    def images(self) -> np.ndarray:
        with np.load(self.path / QUERIES_NPZ, allow_pickle=False) as z:
            return np.asarray(z["images"])


def query_id(info: dict[str, Any], gain_index: int) -> str:
    return f"k{info['key']:03d}-b{info['base']:02d}-g{gain_index}-{'p' if info['sign'] > 0 else 'm'}"


def check_keydir_location(keydir: Path, release: Path, inputs: list[Path] = ()) -> Path:
    """KEYDIR must be a new (or empty) folder outside the release (and outside the inputs)."""
    keydir = Path(keydir).expanduser().resolve()
    release = Path(release).expanduser().resolve()

    def within(path: Path, parent: Path) -> bool:
        return path == parent or parent in path.parents

    if within(keydir, release):
        raise KeyDirError(f"key folder {keydir} is inside the release {release}: the keys must stay outside the release")
    if within(release, keydir):
        raise KeyDirError(f"key folder {keydir} contains the release {release}: the keys must stay outside the release")
    for src in inputs:
        src = Path(src).expanduser().resolve()
        if within(keydir, src) or within(src, keydir):
            raise KeyDirError(f"key folder {keydir} overlaps the input {src}: choose a folder outside the input tree")
    if keydir.exists() and (not keydir.is_dir() or any(keydir.iterdir())):
        raise KeyDirError(f"key folder {keydir} already exists and is not empty; choose a new folder")
    return keydir


def write_keydir(keydir: Path, keys: KeySet, queries_native: np.ndarray, info: list[dict[str, Any]], dtype: np.dtype, *,
                 fingerprint: str, png: bool, extra: dict[str, Any] | None = None) -> Path:
    """Write KEYDIR atomically (a temporary sibling renamed into place); ``info`` from KeySet.queries_normalized."""
    keydir = Path(keydir)
    keydir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".salm-partial-{keydir.name}-", dir=keydir.parent))
    try:
        os.chmod(tmp, 0o700)  # private by default
        gains = sorted({q["gain"] for q in info})
        ids = [query_id(q, gains.index(q["gain"])) for q in info]
        images = _to_dtype(queries_native, dtype)
        np.savez_compressed(tmp / QUERIES_NPZ, images=images, ids=np.asarray(ids))
        if png:
            (tmp / QUERIES_DIR).mkdir()
            for qid, img in zip(ids, images):
                _write_png(tmp / QUERIES_DIR / f"{qid}.png", img)
        document = {
            "format": KEYS_FORMAT, "version": KEYS_VERSION,
            "software": {"name": "SALM Desktop", "version": __version__},
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "release_fingerprint": fingerprint,
            "fingerprint_of": "sha256 of the release's manifest.json",
            "secret_seed": int(keys.seed),
            "n_classes": int(keys.n_classes),
            "keys": keys.count,
            "secret_labels": [int(v) for v in keys.labels],
            "queries": [{"id": qid, **q} for qid, q in zip(ids, info)],
            "image_shape": list(images.shape[1:]), "dtype": str(images.dtype),
            "design": {"name": DESIGN,
                       "keys": "saturated separable gratings, one frequency pair (fy, fx) per key, random phase per use",
                       "key_frequencies": [[float(a), float(b)] for a, b in keys.freqs],
                       "mark": "sign of the sum of the class's key gratings on the pixels the protection changed",
                       "query": "pairs (base image + gain * grating, base image) in the normalized scale",
                       "mark_strength_of_epsilon": keys.strength},
            "test": "per key: a majority over its (+, -) query pairs whose answers differ (the + answer votes); "
                    "hits ~ Binomial(informative keys, 1/C) under the null hypothesis (exact)",
            **(extra or {}),
        }
        (tmp / KEYS_JSON).write_text(json.dumps(document, indent=2), encoding="utf-8")
        (tmp / README).write_text(README_TEXT, encoding="utf-8")
        if keydir.is_dir():
            keydir.rmdir()  # checked empty before the job
        os.replace(tmp, keydir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return keydir


def _to_dtype(native: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(native), info.min, info.max).astype(dtype)
    return np.asarray(native, dtype=dtype)


def _write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    if img.dtype == np.uint8:
        Image.fromarray(img, mode="L").save(path)
    elif np.issubdtype(img.dtype, np.integer):
        Image.fromarray(np.clip(img, 0, 65535).astype(np.uint16)).save(path)
    else:  # float data: an 8-bit rendering of the normalized query (for a service that takes pictures)
        lo, hi = float(img.min()), float(img.max())
        Image.fromarray(np.rint(255 * (img - lo) / max(1e-12, hi - lo)).astype(np.uint8), mode="L").save(path)


def read_keydir(keydir: Path) -> KeyRecord:
    """Read a KEYDIR; raises :class:`KeyDirError` naming what is missing or broken."""
    keydir = Path(keydir).expanduser()
    if not keydir.is_dir():
        raise KeyDirError(f"{keydir}: no such key folder")
    path = keydir / KEYS_JSON
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyDirError(f"{keydir}: not a key folder (no {KEYS_JSON})") from None
    except (OSError, ValueError) as exc:
        raise KeyDirError(f"{path}: not a readable key file ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != KEYS_FORMAT:
        raise KeyDirError(f"{path}: not a SALM Desktop key file")
    try:
        labels = np.asarray(doc["secret_labels"], dtype=np.int64)
        queries = doc["queries"]
        pairs: dict[tuple, int] = {}
        pair_of = [pairs.setdefault((int(q["key"]), int(q["base"]), float(q["gain"])), len(pairs)) for q in queries]
        record = KeyRecord(keydir, int(doc["secret_seed"]), int(doc["n_classes"]), labels,
                           [str(q["id"]) for q in queries], np.asarray([int(q["key"]) for q in queries]),
                           np.asarray([int(q["sign"]) for q in queries]), np.asarray(pair_of),
                           str(doc["release_fingerprint"]), doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyDirError(f"{path}: incomplete key file ({exc.__class__.__name__}: {exc})") from None
    if not (keydir / QUERIES_NPZ).is_file():
        raise KeyDirError(f"{keydir}: {QUERIES_NPZ} is missing")
    return record
