"""Clinical-fidelity numbers, accumulated sample by sample so that memory stays bounded.

Definitions (also in docs/report.md):
- normalized scale: the series' IntensityMap, ``(native - low) / (high - low)``, not clipped;
- PSNR: ``10 log10(1 / MSE)`` over all pixels of the series (job: of all series), data range 1 in
  the normalized scale; identical data gives ``None`` (infinite PSNR);
- SSIM: scikit-image ``structural_similarity`` per sample in the normalized scale, data range 1,
  gaussian weights off, 7-pixel window (smaller for tiny images); the series value is the mean;
- changes in native units (HU for CT): largest and mean absolute change over all pixels; a pixel is
  "changed" when its written native value differs from the original;
- foreground / background: inside / outside the patient's body (``protect.masks.body_mask``: CT
  above -500 HU, other data above half the Otsu level, plus morphology), the same mask the engine
  uses for ``foreground=True``;
- noise: the series' own noise SD (``fidelity.noise.noise_sd``, median over samples), the high-pass
  SD in the body before/after, and the change relative to the noise;
- structure: the largest local autocorrelation peak of the perturbation at lags 2..16 px
  (``fidelity.noise.periodicity``) over the report's slices;
- ROI: per label of a label map aligned with the samples, mean, standard deviation and high-pass
  SD before/after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from salm_desktop.core.model import IntensityMap, Series
from salm_desktop.core.protect.masks import body_mask

from .noise import highpass, noise_sd, periodicity

HIST_BINS = 128
MAX_SLICES = 3


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float | None:
    if mse <= 0:
        return None
    return float(10.0 * math.log10(data_range**2 / mse))


def ssim_normalized(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two images already in the normalized scale (data range 1)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if np.array_equal(a, b):
        return 1.0
    smallest = min(a.shape)
    win = min(7, smallest if smallest % 2 == 1 else smallest - 1)
    if win < 3:
        return float("nan")
    return float(structural_similarity(a, b, data_range=1.0, win_size=win))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def display_slice(array: np.ndarray) -> np.ndarray:
    """A 2D view of a sample: itself, or the middle slice along the last axis of a volume."""
    a = np.asarray(array)
    while a.ndim > 2:
        a = a[..., a.shape[-1] // 2]
    return a


@dataclass
class _Region:
    pixels: int = 0
    changed: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    sum_sq: float = 0.0

    def add(self, diff: np.ndarray) -> None:
        a = np.abs(diff)
        self.sum_sq += float((a * a).sum(dtype=np.float64))
        self.pixels += int(a.size)
        self.changed += int(np.count_nonzero(a))
        self.sum_abs += float(a.sum(dtype=np.float64))
        if a.size:
            self.max_abs = max(self.max_abs, float(a.max()))

    @classmethod
    def from_dict(cls, numbers: dict[str, Any]) -> "_Region":
        """The region behind :meth:`as_dict`'s figures (a unit's manifest): pixels, changed, sums, largest."""
        pixels = int(numbers.get("pixels") or 0)
        return cls(pixels=pixels, changed=int(round(float(numbers.get("fraction_changed") or 0) * pixels)),
                   sum_abs=float(numbers.get("mean_abs_change_native") or 0) * pixels,
                   max_abs=float(numbers.get("max_abs_change_native") or 0))

    def merge(self, other: "_Region") -> None:
        self.pixels += other.pixels
        self.changed += other.changed
        self.sum_abs += other.sum_abs
        self.sum_sq += other.sum_sq
        self.max_abs = max(self.max_abs, other.max_abs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pixels": self.pixels,
            "fraction_changed": (self.changed / self.pixels) if self.pixels else 0.0,
            "mean_abs_change_native": (self.sum_abs / self.pixels) if self.pixels else 0.0,
            "max_abs_change_native": self.max_abs,
        }


@dataclass
class _Moments:
    n: int = 0
    s: float = 0.0
    ss: float = 0.0

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64)
        self.n += int(v.size)
        self.s += float(v.sum())
        self.ss += float((v * v).sum())

    @property
    def mean(self) -> float:
        return self.s / self.n if self.n else float("nan")

    @property
    def std(self) -> float:
        if not self.n:
            return float("nan")
        return math.sqrt(max(0.0, self.ss / self.n - self.mean**2))


@dataclass
class SeriesFidelity:
    """Accumulates the fidelity numbers of one series; call :meth:`add` once per written sample."""

    series_id: str
    kind: str
    modality: str
    unit: str
    window: tuple[float, float]
    n_samples: int
    epsilon: float | None = None
    window_name: str = ""  # how the window was chosen ("file's window C40/W400", ...)
    roi: Any = None  # callable(sample_index) -> int label array of the sample's shape, or None
    all_: _Region = field(default_factory=_Region)
    inside: _Region = field(default_factory=_Region)
    outside: _Region = field(default_factory=_Region)
    sq_err_norm: float = 0.0
    ssim_sum: float = 0.0
    ssim_count: int = 0
    samples: int = 0
    hist_before: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))
    hist_after: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))
    slices: list[dict[str, Any]] = field(default_factory=list)
    roi_before: dict[int, _Moments] = field(default_factory=dict)
    roi_after: dict[int, _Moments] = field(default_factory=dict)
    roi_hp_before: dict[int, _Moments] = field(default_factory=dict)
    roi_hp_after: dict[int, _Moments] = field(default_factory=dict)
    hp_before: _Moments = field(default_factory=_Moments)  # high-pass residual inside the body
    hp_after: _Moments = field(default_factory=_Moments)
    noise_sds: list[float] = field(default_factory=list)
    structure: dict[str, Any] | None = None  # the worst periodicity() over the report's slices
    _slice_indices: set[int] = field(default_factory=set)

    @classmethod
    def for_series(cls, series: Series, epsilon: float | None = None, roi: Any = None) -> "SeriesFidelity":
        n = len(series.samples)
        fid = cls(
            series_id=series.id,
            kind=series.kind,
            modality=series.modality,
            unit=series.intensity.unit,
            window=(float(series.intensity.low), float(series.intensity.high)),
            n_samples=n,
            epsilon=epsilon,
            window_name=series.intensity.name,
            roi=roi,
        )
        if n:
            count = min(MAX_SLICES, n)
            fid._slice_indices = {int(round(x)) for x in np.linspace(0, n - 1, count + 2)[1:-1]} if n > 2 else set(range(n))
        return fid

    @property
    def edges(self) -> np.ndarray:
        low, high = self.window
        return np.linspace(low, high, HIST_BINS + 1)

    def normalize(self, native: np.ndarray) -> np.ndarray:
        low, high = self.window
        return (np.asarray(native, dtype=np.float64) - low) / (high - low)

    def add(self, index: int, original: np.ndarray, written: np.ndarray) -> None:
        original = np.asarray(original, dtype=np.float64)
        written = np.asarray(written, dtype=np.float64)
        diff = written - original
        self.samples += 1
        self.all_.add(diff)
        low, high = self.window
        fg = body_mask(original, IntensityMap(low, high, self.unit))
        self.inside.add(diff[fg])
        self.outside.add(diff[~fg])
        a, b = self.normalize(original), self.normalize(written)
        self.sq_err_norm += float(((b - a) ** 2).sum())
        s = ssim_normalized(a, b)
        if not math.isnan(s):
            self.ssim_sum += s
            self.ssim_count += 1
        hp_o, hp_w = highpass(original), highpass(written)
        self.hp_before.add(hp_o[fg])
        self.hp_after.add(hp_w[fg])
        sd = noise_sd(original, fg)
        if sd is not None:
            self.noise_sds.append(sd)
        self.hist_before += np.histogram(np.clip(original, low, high), bins=self.edges)[0]
        self.hist_after += np.histogram(np.clip(written, low, high), bins=self.edges)[0]
        if index in self._slice_indices:
            self.slices.append({"index": int(index), "original": display_slice(original).astype(np.float32),
                                "protected": display_slice(written).astype(np.float32)})
            if np.any(diff):
                found = periodicity(diff)
                if self.structure is None or found["excess"] > self.structure["excess"]:
                    self.structure = {**found, "sample": int(index)}
        if self.roi is not None:
            labels = self.roi(index)
            if labels is not None:
                labels = np.asarray(labels)
                for lab in np.unique(labels):
                    if lab == 0:
                        continue
                    inside = labels == lab
                    self.roi_before.setdefault(int(lab), _Moments()).add(original[inside])
                    self.roi_after.setdefault(int(lab), _Moments()).add(written[inside])
                    self.roi_hp_before.setdefault(int(lab), _Moments()).add(hp_o[inside])
                    self.roi_hp_after.setdefault(int(lab), _Moments()).add(hp_w[inside])

    @property
    def mse_norm(self) -> float:
        return self.sq_err_norm / self.all_.pixels if self.all_.pixels else 0.0

    @property
    def noise_sd_native(self) -> float | None:
        return float(np.median(self.noise_sds)) if self.noise_sds else None

    def noise_dict(self) -> dict[str, Any]:
        """The scan's own noise and the change relative to it (native units)."""
        sd = self.noise_sd_native
        rms = math.sqrt(self.all_.sum_sq / self.all_.pixels) if self.all_.pixels else 0.0
        out: dict[str, Any] = {
            "noise_sd_native": sd,
            "highpass_sd_body_before": self.hp_before.std,
            "highpass_sd_body_after": self.hp_after.std,
            "highpass_sd_body_change_fraction": _ratio(self.hp_after.std, self.hp_before.std) - 1.0,
            "rms_change_native": rms,
        }
        if sd:
            out["max_change_per_noise_sd"] = self.all_.max_abs / sd
            out["rms_change_per_noise_sd"] = rms / sd
            if self.epsilon is not None:
                out["epsilon_per_noise_sd"] = float(self.epsilon) * (self.window[1] - self.window[0]) / sd
        return out

    def roi_table(self) -> list[dict[str, Any]]:
        rows = []
        for lab in sorted(self.roi_before):
            b, a = self.roi_before[lab], self.roi_after[lab]
            rows.append({
                "label": lab, "voxels": b.n,
                "mean_before": b.mean, "mean_after": a.mean, "mean_change": a.mean - b.mean,
                "std_before": b.std, "std_after": a.std, "std_change": a.std - b.std,
                "highpass_sd_before": self.roi_hp_before[lab].std, "highpass_sd_after": self.roi_hp_after[lab].std,
                "highpass_sd_change_fraction": _ratio(self.roi_hp_after[lab].std, self.roi_hp_before[lab].std) - 1.0,
            })
        return rows

    def as_dict(self) -> dict[str, Any]:
        low, high = self.window
        out = {
            "series": self.series_id,
            "kind": self.kind,
            "modality": self.modality,
            "unit": self.unit,
            "window": [low, high],
            "window_name": self.window_name,
            "samples": self.samples,
            "psnr_db": psnr_from_mse(self.mse_norm),
            "ssim": (self.ssim_sum / self.ssim_count) if self.ssim_count else None,
            **self.all_.as_dict(),
            "foreground": self.inside.as_dict(),
            "background": self.outside.as_dict(),
        }
        if self.epsilon is not None:
            out["epsilon_native"] = float(self.epsilon) * (high - low)
        out.update(self.noise_dict())
        if self.structure is not None:
            out["structure"] = self.structure
        if self.roi_before:
            out["roi"] = self.roi_table()
        return out


@dataclass
class JobFidelity:
    """All series of a job, plus the pooled whole-job numbers."""

    series: list[SeriesFidelity] = field(default_factory=list)

    def add_series(self, fid: SeriesFidelity) -> SeriesFidelity:
        self.series.append(fid)
        return fid

    def summary(self) -> dict[str, Any]:
        return _pooled((f.all_, f.inside, f.outside, f.sq_err_norm, f.ssim_sum, f.ssim_count, f.samples, f.unit)
                       for f in self.series)

    def change_figures(self) -> dict[str, float]:
        """The protection summary's change figures (``protect.result.CHANGE_KEYS``) over every pixel written."""
        total = _Region()
        for f in self.series:
            total.merge(f.all_)
        return {"fraction_pixels_changed": total.changed / max(1, total.pixels), "max_abs_change_native": total.max_abs,
                "max_abs_change_normalized": max((f.all_.max_abs / (f.window[1] - f.window[0]) for f in self.series),
                                                 default=0.0)}

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.summary(), "series": [f.as_dict() for f in self.series]}


def _pooled(parts) -> dict[str, Any]:  # noqa: ANN001 - (all, inside, outside, squared error, SSIM sum, SSIM count, samples, unit)
    """The whole-job numbers pooled over series."""
    total, inside, outside = _Region(), _Region(), _Region()
    sq, ssim_sum, ssim_n, samples, units = 0.0, 0.0, 0, 0, set()
    for all_, fg, bg, sq_err, s_sum, s_count, n, unit in parts:
        total.merge(all_)
        inside.merge(fg)
        outside.merge(bg)
        sq += sq_err
        ssim_sum += s_sum
        ssim_n += s_count
        samples += n
        units.add(unit)
    return {
        "samples": samples,
        "psnr_db": psnr_from_mse(sq / total.pixels if total.pixels else 0.0),
        "ssim": (ssim_sum / ssim_n) if ssim_n else None,
        **total.as_dict(),
        # native units differ between series (HU, arbitrary MR units, 8-bit): say so
        "native_units": sorted(u or "native" for u in units),
        "foreground": inside.as_dict(),
        "background": outside.as_dict(),
    }


def pooled_fidelity(series: list[dict[str, Any]]) -> dict[str, Any]:
    """``JobFidelity.as_dict()`` of several jobs' series figures (a batch job's units, from their manifests).

    The pooled figures are those of one job over the same series, but for PSNR and SSIM, which are
    pooled from each series' value (its squared error from its PSNR, its SSIM weighted by its samples).
    """
    def part(d: dict[str, Any]):  # noqa: ANN202
        all_ = _Region.from_dict(d)
        psnr, n = d.get("psnr_db"), int(d.get("samples") or 0)
        sq = all_.pixels * 10.0 ** (-float(psnr) / 10.0) if psnr is not None else 0.0
        ssim = d.get("ssim")
        return (all_, _Region.from_dict(d.get("foreground") or {}), _Region.from_dict(d.get("background") or {}), sq,
                float(ssim) * n if ssim is not None else 0.0, n if ssim is not None else 0, n, d.get("unit") or "")

    return {"job": _pooled(part(d) for d in series), "series": list(series)}
