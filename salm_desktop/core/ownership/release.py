"""Mark a protection result with ownership keys and write KEYDIR (called by core/jobs.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from salm_desktop.core.model import Series

from .keydir import KeyDirError, manifest_fingerprint, write_keydir
from .keys import DEFAULT_KEYS, DEFAULT_STRENGTH, QUERY_BASES, KeySet, make_keys, mark_sample, sample_rng

#: the line the report and the manifest carry (never the keys, never where they are)
REPORT_LINE = ("This release carries ownership keys: a faint mark inside the protection budget that lets the data "
               "steward test whether a model was trained on it. The keys are kept privately, outside the release.")


#: how much the keys weaken the protection, measured (docs/ownership.md, 2026-12-03): said by the CLI, the export
#: step and the officer report
KEYS_COST = ("on BreastMNIST and PneumoniaMNIST, thieves of a keyed release ranked clean "
             "patients at AUC 0.65-0.94 against 0.42-0.86 on the same release without keys; 6 of 12 augmenting thieves "
             "were flagged, none after JPEG or a median filter; the keys lower the release's PSNR by about 3.4 dB")


class MarkedResult:
    """A ProtectResult whose ``protected`` values also carry the ownership mark (same budget)."""

    def __init__(self, inner: Any, keys: KeySet, series: Sequence[Series], epsilon: float) -> None:
        self.inner = inner
        self.keys = keys
        self.epsilon = float(epsilon)
        self._series = {s.id: s for s in series}
        self._labels = {s.id: inner.labels_used(s.id) for s in series}
        self.seconds = 0.0

    @property
    def summary(self) -> dict[str, Any]:
        """The protection summary and the ownership line. Its change figures are those the export measured on
        the marked values it wrote (``record_changes``, passed on to the inner result)."""
        out = dict(self.inner.summary)
        out.update(ownership_keys=REPORT_LINE, ownership_keys_cost=KEYS_COST, ownership_seconds=round(self.seconds, 3))
        return out

    def __getattr__(self, name: str) -> Any:  # summary, settings, delta, labels_used, _where, close ...
        return getattr(self.inner, name)

    def protected(self, series_id: str, index: int) -> np.ndarray:
        series = self._series.get(series_id)
        if series is None:  # not a marked series
            return self.inner.protected(series_id, index)
        return self.protected_from(series_id, index, series.samples[index].read())

    def protected_from(self, series_id: str, index: int, original: np.ndarray) -> np.ndarray:
        """:meth:`protected` from the sample's native values already decoded by the caller (a writer)."""
        t0 = time.perf_counter()
        prot = self.inner.protected_from(series_id, index, original)
        series = self._series.get(series_id)
        if series is None:
            return prot
        sample = series.samples[index]
        it = series.intensity
        marked = mark_sample(prot, original, self._labels[series_id][index], self.keys, self.epsilon, it.width, it.low, it.high,
                             sample_rng(self.keys, series_id, index))
        out = sample.stored.quantize(marked)
        out = np.where(np.abs(out - original) > np.float32(self.epsilon * it.width) * 1.0001, prot, out)  # rounding never exceeds the budget
        out = np.where(out == original, original, out).astype(np.float32)
        self.seconds += time.perf_counter() - t0
        return out

    def close(self) -> None:
        self.inner.close()


def plan_keys(series: Sequence[Series], result: Any, *, count: int = DEFAULT_KEYS, strength: float = DEFAULT_STRENGTH,
              seed: int | None = None) -> KeySet:
    """A fresh key set for the protected ``series`` (one 2D image shape, labelled). Raises KeyDirError."""
    shapes = {s.shape for ser in series for s in ser.samples}
    if len(shapes) != 1:
        raise KeyDirError(f"ownership keys need one 2D image size in the protected data; found {len(shapes)} sizes")
    shape = shapes.pop()
    if len(shape) != 2:
        raise KeyDirError(f"ownership keys need 2D images; the protected samples have shape {shape}")
    labels = [int(v) for ser in series for v in result.labels_used(ser.id)]
    n_classes = max(labels) + 1 if labels else 0
    if n_classes < 2:
        raise KeyDirError("ownership keys need labelled data with at least two classes")
    try:
        return make_keys(shape, n_classes, count, seed=seed, strength=strength)
    except ValueError as exc:
        raise KeyDirError(str(exc)) from None


def query_bases(series: Sequence[Series], keys: KeySet, count: int = QUERY_BASES) -> np.ndarray:
    """``count`` original (unprotected) images of the data, normalized, chosen with the secret seed."""
    samples = [(ser, smp) for ser in series for smp in ser.samples]
    rng = np.random.default_rng([keys.seed, 1])
    picks = rng.choice(len(samples), size=min(count, len(samples)), replace=False)
    return np.stack([np.clip(samples[i][0].intensity.normalize(samples[i][1].read()), 0.0, 1.0) for i in sorted(picks)])


def write_release_keys(keydir: Path, keys: KeySet, series: Sequence[Series], manifest: Path) -> Path:
    """Write KEYDIR for the release whose manifest is ``manifest`` (queries in the input's dtype)."""
    ref = series[0]
    queries, info = keys.queries_normalized(query_bases(series, keys))
    stored = ref.samples[0].stored.to_stored(ref.intensity.denormalize(queries))
    return write_keydir(keydir, keys, np.asarray(stored), info, np.dtype(ref.samples[0].stored.dtype),
                        fingerprint=manifest_fingerprint(manifest), png=ref.kind in ("npz", "images"),
                        extra={"intensity_window": [ref.intensity.low, ref.intensity.high], "input_kind": ref.kind})
