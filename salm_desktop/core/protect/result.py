"""What a protection job hands out: :class:`ProtectResult` (the noise per sample, applied on demand)
and the job's summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from salm_desktop.core.model import Series

from .settings import ProtectSettings


CHANGE_KEYS = ("fraction_pixels_changed", "max_abs_change_native", "max_abs_change_normalized")


@dataclass
class ProtectResult:
    """The noise of every sample of ``series``, applied on demand (:meth:`protected`), and the job's
    :attr:`summary`.

    The summary's change figures (:data:`CHANGE_KEYS`) are measured once, where the pixels are: the
    export measures the values it writes (``fidelity.metrics``) and hands them over with
    :meth:`record_changes`; a caller that asks for the summary before any export (the wizard's protect
    step) gets them measured here, once.
    """

    series: list[Series]
    settings: ProtectSettings
    _where: dict = field(default_factory=dict, repr=False)  # (series_id, index) -> (bucket, pos)
    _labels: dict = field(default_factory=dict, repr=False)  # series_id -> list[int]
    _eps: dict = field(default_factory=dict, repr=False)  # series_id -> budget in the normalized scale
    _summary: dict = field(default_factory=dict, repr=False)  # the engine's figures (budgets, rounds, device)
    _changes: dict | None = field(default=None, repr=False)  # CHANGE_KEYS, once measured

    @property
    def summary(self) -> dict:
        if self._changes is None:
            self._changes = self._measure_changes()
        return {**self._summary, **self._changes}

    @summary.setter
    def summary(self, value: dict) -> None:
        self._summary = {k: v for k, v in value.items() if k not in CHANGE_KEYS}
        changes = {k: value[k] for k in CHANGE_KEYS if k in value}
        self._changes = changes if len(changes) == len(CHANGE_KEYS) else self._changes

    def record_changes(self, changes: dict) -> None:
        """The change figures as the export measured them on the values it wrote (see :data:`CHANGE_KEYS`)."""
        self._changes = {k: changes[k] for k in CHANGE_KEYS}

    def _measure_changes(self) -> dict:
        changed = numel = 0
        max_native = max_norm = 0.0
        for ser in self.series:
            for index, sample in enumerate(ser.samples):
                if (ser.id, index) not in self._where:
                    continue
                original = sample.read()
                diff = np.abs(self.protected_from(ser.id, index, original).astype(np.float64) - original)
                changed += int(np.count_nonzero(diff))
                numel += diff.size
                if diff.size:
                    max_native = max(max_native, float(diff.max()))
                    max_norm = max(max_norm, float(diff.max()) / ser.intensity.width)
        return {"fraction_pixels_changed": changed / max(1, numel), "max_abs_change_native": max_native,
                "max_abs_change_normalized": max_norm}

    def _series(self, series_id: str) -> Series:
        for s in self.series:
            if s.id == series_id:
                return s
        raise KeyError(f"unknown series {series_id}")

    def delta(self, series_id: str, index: int) -> np.ndarray:
        """The noise of one sample in the normalized scale (float32, exactly 0 outside the mask)."""
        bucket, pos = self._where[(series_id, index)]
        eps = float(self._eps.get(series_id, self.settings.epsilon))
        return np.clip(np.asarray(bucket.delta[pos], dtype=np.float32), -eps, eps)

    def protected(self, series_id: str, index: int) -> np.ndarray:
        """Native float32 values of one protected sample, already quantized to its stored format.

        Pixels whose noise is zero keep their exact original values.
        """
        series = self._series(series_id)
        return self.protected_from(series_id, index, series.samples[index].read())

    def protected_from(self, series_id: str, index: int, native: np.ndarray) -> np.ndarray:
        """:meth:`protected` from the sample's native values already decoded by the caller (a writer)."""
        series = self._series(series_id)
        sample = series.samples[index]
        d = self.delta(series_id, index)
        out = sample.stored.quantize(native + d * np.float32(series.intensity.width))
        return np.where(d == 0, native, out).astype(np.float32)

    def labels_used(self, series_id: str) -> list[int]:
        return list(self._labels[series_id])

    def covers(self, series: Series) -> bool:
        """Whether every sample of ``series`` has its noise in this result."""
        return all((series.id, i) in self._where for i in range(len(series.samples)))

    def budget(self, series_id: str) -> float:
        """The normalized budget ``series_id`` was protected with (its window, a native budget, a noise cap)."""
        return float(self._eps.get(series_id, self.settings.epsilon))

    def mask_ratio(self, series_id: str) -> float:
        """The fraction of pixels ``series_id``'s variant could change (``salm``: 0.3 for the 2D 8-bit class texture)."""
        per_series = self._summary.get("mask_ratio_per_series") or {}  # the engine's figures: nothing is decoded
        return float(per_series.get(series_id, self.settings.effective_mask_ratio))

    def close(self) -> None:
        seen = set()
        for bucket, _ in self._where.values():
            if id(bucket) in seen:
                continue
            seen.add(id(bucket))
            for store in (bucket.clean, bucket.delta, bucket.mask, bucket.fg):
                if store is not None:
                    store.close()


def job_summary(job, gen_seconds: float) -> dict:  # noqa: ANN001
    """The engine's summary of a finished job (``engine._Job``): budgets, rounds, device. Nothing is
    decoded here: the change figures are the result's (see :attr:`ProtectResult.summary`)."""
    eps_native = {ser.id: ser.intensity.delta_to_native(job.eps_series[ser.id]) for ser in job.series}
    accs = list(job.accuracy.values())
    ratios = set(job.ratio_series.values())
    return {
        "method": job.s.method,
        "variant": job.variant or None,
        "epsilon": job.eps,
        "epsilon_native": max(eps_native.values()),
        "epsilon_native_per_series": eps_native,
        "epsilon_per_series": dict(job.eps_series),
        "epsilon_unit_per_series": {ser.id: ser.intensity.unit for ser in job.series},
        "window_per_series": {ser.id: [ser.intensity.low, ser.intensity.high, ser.intensity.name] for ser in job.series},
        "noise_sd_native_per_series": dict(job.noise_series),
        "mask_ratio": ratios.pop() if len(ratios) == 1 else None,  # one ratio for the job, else see per series
        "mask_ratio_per_series": dict(job.ratio_series),
        "recompute_mask": job.mode,
        "foreground": bool(job.s.foreground),
        "robust": job.robust,
        "rounds": job.rounds,
        "seconds": round(gen_seconds, 3),
        "device": str(job.device),
        "samples": sum(len(s.samples) for s in job.series),
        "series": len(job.series),
        "labels": job.s.labels,
        "surrogate_accuracy": (min(accs) if accs else None),
        "surrogate_loss": (max(job.loss.values()) if job.loss else None),
        "stop_round": (max(job.stop_round.values()) if job.stop_round else None),
        "extra_rounds": int(job.s.extra_rounds),
        "stop_loss": job.s.stop_loss,
        "seed": job.s.seed,
        "precision": job.precision,
        "pgd_steps_run_fraction": (round(job.pgd_sample_steps / job.pgd_sample_steps_max, 4)
                                   if job.pgd_sample_steps_max else None),
    }
