"""The wizard's only door to the core: the same functions the CLI calls (no Qt here).

Every function takes a core :class:`Progress` and is meant to run on a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from salm_desktop.core.model import IntensityMap, LoadResult, Sample, Series, Skipped
from salm_desktop.core.progress import Progress

from .model import WizardSettings, build_protect_settings

if TYPE_CHECKING:
    from salm_desktop.core.jobs import JobResult
    from salm_desktop.core.protect.engine import ProtectResult


@dataclass
class LoadedStudy(LoadResult):
    """A LoadResult whose label maps (``*_seg.nrrd`` beside the images) are kept apart: they are
    regions for the report, not series to protect."""

    label_maps: list[Series] = field(default_factory=list)


def load(paths: Sequence[Path | str], settings: WizardSettings, progress: Progress | None = None) -> LoadedStudy:
    from salm_desktop.core.studies import load_paths
    from salm_desktop.core.studies.loader import split_label_maps

    loaded = load_paths([Path(p) for p in paths], labels=settings.study_labels(), progress=progress)
    label_maps = split_label_maps(loaded)
    result = LoadedStudy(series=loaded.series, skipped=loaded.skipped, label_maps=label_maps)
    # The loader computes MR intensity windows lazily (a few samples' pixels); the wizard shows them at
    # once (the budget in native units), so compute them here, off the UI thread.
    for n, series in enumerate(result.series):
        try:
            series.intensity
        except Exception:  # shown as missing in the budget line; protection reports the file itself
            pass
        if progress is not None:
            progress.update("window", n + 1, len(result.series), f"intensity window of series {series.id}")
    return result


@dataclass
class ProtectRun:
    """A wizard protection: the result, the series it covers (a series that lost an unreadable file
    is a copy without it) and the files skipped on the way, each with its reason."""

    result: ProtectResult
    series: list[Series]
    skipped: list[Skipped]


def protect(series: Sequence[Series], settings: WizardSettings, progress: Progress | None = None) -> ProtectRun:
    """Protect ``series`` the way a job does: one unreadable file is skipped, the others are protected."""
    from salm_desktop.core.jobs import JobError, protect_skipping_unreadable

    try:
        result, kept, skipped = protect_skipping_unreadable(list(series), build_protect_settings(settings), progress)
    except JobError as exc:
        raise ValueError(str(exc)) from None
    return ProtectRun(result, kept, skipped)


def preview_mask(sample: Sample, intensity: IntensityMap, settings: WizardSettings, mask_ratio: float) -> np.ndarray:
    from salm_desktop.core.protect import preview_mask as core_preview_mask

    from salm_desktop.core.protect import default_mask_ratio

    ratio = 1.0 if settings.method == "em" else float(mask_ratio)
    if ratio <= 0:  # auto: the ratio the variant that protects this sample uses
        ratio = default_mask_ratio(settings.method, intensity, len(sample.shape))
    mask = core_preview_mask(sample, intensity, ratio, foreground=bool(settings.foreground),
                             seed=int(settings.seed), device=settings.device)
    return np.asarray(mask, dtype=bool)


def series_fidelity(series: Series, result: "ProtectResult", progress: Progress | None = None,
                    max_samples: int = 256) -> dict[str, float]:
    """Fidelity numbers of one series, computed by the core (the same definitions as the report).

    Large series are summarized on an evenly spaced subset of ``max_samples`` samples.
    """
    from salm_desktop.core.fidelity.metrics import SeriesFidelity

    n = len(series.samples)
    indices = list(range(n)) if n <= max_samples else [int(i) for i in np.linspace(0, n - 1, max_samples).round()]
    fid = SeriesFidelity.for_series(series)
    for k, i in enumerate(indices):
        original = series.samples[i].read()  # decoded once, for the noise and the numbers
        fid.add(i, original, np.asarray(result.protected_from(series.id, i, original), np.float32))
        if progress is not None and k % 16 == 0:
            progress.update("fidelity", k, len(indices), f"series {series.id}")
    d = fid.as_dict()
    psnr = d.get("psnr_db")
    numbers = {
        "psnr_db": float("inf") if psnr is None else float(psnr),
        "max_abs_change_native": float(d["max_abs_change_native"]),
        "mean_abs_change_native": float(d["mean_abs_change_native"]),
        "fraction_changed": float(d["fraction_changed"]),
        "foreground_fraction_changed": float(d["foreground"]["fraction_changed"]),
        "samples_measured": float(len(indices)),
    }
    if d.get("ssim") is not None:
        numbers["ssim"] = float(d["ssim"])
    return numbers


def export(result: ProtectResult, inputs: Sequence[Path], out_dir: Path,
           settings: WizardSettings, splits: Sequence[str], progress: Progress | None = None,
           loaded: LoadResult | None = None, overwrite: bool = False,
           keys: Path | None = None, **job_kwargs: Any) -> "JobResult":
    """Write the protected copy, the manifest and (optionally) the report through the job pipeline.

    ``loaded`` is the wizard's LoadResult restricted to what the user kept (npz splits that are not
    protected are still passed so that they are copied unchanged); with it, ``result`` (the reviewed
    protection, a :class:`ProtectResult` of those series) is written as it is.
    """
    from salm_desktop.core.jobs import run_protect_job

    return run_protect_job([Path(p) for p in inputs], Path(out_dir), build_protect_settings(settings),
                           labels=settings.loader_labels(), splits=tuple(splits), formats=settings.output_format,
                           report=bool(settings.report), progress=progress, overwrite=bool(overwrite), loaded=loaded,
                           result=result, keys=Path(keys) if keys is not None else None,
                           **job_kwargs)  # de-identification options, steward record, operator and purpose (gui/deid_panel.py)


def run_job(inputs: Sequence[Path | str], out_dir: Path, settings: WizardSettings,
            splits: Sequence[str] = ("train",), progress: Progress | None = None) -> "JobResult":
    """The CLI's one call: load, protect, export, manifest, report (batch uses it per folder)."""
    from salm_desktop.core.jobs import run_protect_job

    return run_protect_job([Path(p) for p in inputs], Path(out_dir), build_protect_settings(settings),
                           labels=settings.loader_labels(), splits=tuple(splits),
                           formats=settings.output_format, report=bool(settings.report), progress=progress)


def job_paths(job_result: "JobResult", out_dir: Path) -> dict[str, Path | None]:
    """Where the report and manifest of a finished job are."""
    return {"out_dir": job_result.out_dir or Path(out_dir), "report": job_result.report_html,
            "report_pdf": job_result.report_pdf, "manifest": job_result.manifest}
