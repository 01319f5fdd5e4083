"""The wizard's only door to the core: the same functions the CLI calls (no Qt here).

Every function takes a core :class:`Progress` and is meant to run on a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from salm_desktop.core.model import IntensityMap, LoadResult, Sample, Series, Skipped
from salm_desktop.core.progress import Progress

from .model import WizardSettings, build_protect_settings


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

    result: Any
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

    ratio = 1.0 if settings.method == "em" else float(mask_ratio)
    mask = core_preview_mask(sample, intensity, ratio, foreground=bool(settings.foreground),
                             seed=int(settings.seed), device=settings.device)
    return np.asarray(mask, dtype=bool)


def series_fidelity(series: Series, result: Any, progress: Progress | None = None,
                    max_samples: int = 256) -> dict[str, float]:
    """Fidelity numbers of one series, computed by the core (the same definitions as the report).

    Large series are summarized on an evenly spaced subset of ``max_samples`` samples.
    """
    from salm_desktop.core.fidelity.metrics import SeriesFidelity

    n = len(series.samples)
    indices = list(range(n)) if n <= max_samples else [int(i) for i in np.linspace(0, n - 1, max_samples).round()]
    fid = SeriesFidelity.for_series(series)
    for k, i in enumerate(indices):
        fid.add(i, series.samples[i].read(), np.asarray(result.protected(series.id, i), np.float32))
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


def export(state_series: Sequence[Series], result: Any, inputs: Sequence[Path], out_dir: Path,
           settings: WizardSettings, splits: Sequence[str], progress: Progress | None = None,
           loaded: LoadResult | None = None, overwrite: bool = False,
           keys: Path | None = None, **job_kwargs: Any) -> Any:
    """Write the protected copy, the manifest and (optionally) the report through the job pipeline.

    ``loaded`` is the wizard's LoadResult restricted to what the user kept (npz splits that are not
    protected are still passed so that they are copied unchanged). When the pipeline accepts an
    existing protection result (a ``protected``/``result`` parameter) the reviewed pixels are written
    as they are; otherwise the pipeline protects again with the same settings and seed, which gives
    the same pixels on the same device.
    """
    import inspect as _inspect

    from salm_desktop.core.jobs import run_protect_job

    kwargs: dict[str, Any] = dict(labels=settings.loader_labels(), splits=tuple(splits),
                                  formats=settings.output_format, report=bool(settings.report), progress=progress,
                                  overwrite=bool(overwrite))
    params = _inspect.signature(run_protect_job).parameters
    if loaded is not None and "loaded" in params:
        kwargs["loaded"] = loaded
    for name in ("protected", "result", "protect_result"):
        if result is not None and name in params:
            kwargs[name] = result
            break
    if keys is not None:  # ownership keys (core/ownership): KEYDIR outside the release
        kwargs["keys"] = Path(keys)
    kwargs.update(job_kwargs)  # de-identification options, steward record, operator and purpose (gui/deid_panel.py)
    return run_protect_job([Path(p) for p in inputs], Path(out_dir), build_protect_settings(settings), **kwargs)


def run_job(inputs: Sequence[Path | str], out_dir: Path, settings: WizardSettings,
            splits: Sequence[str] = ("train",), progress: Progress | None = None) -> Any:
    """The CLI's one call: load, protect, export, manifest, report (batch uses it per folder)."""
    from salm_desktop.core.jobs import run_protect_job

    return run_protect_job([Path(p) for p in inputs], Path(out_dir), build_protect_settings(settings),
                           labels=settings.loader_labels(), splits=tuple(splits),
                           formats=settings.output_format, report=bool(settings.report), progress=progress)


def job_paths(job_result: Any, out_dir: Path) -> dict[str, Path | None]:
    """Where the report and manifest of a finished job are (tolerant of the JobResult's shape)."""
    found: dict[str, Path | None] = {"out_dir": Path(out_dir), "report": None, "report_pdf": None, "manifest": None}
    for key, names in {
        "report": ("report_html", "report", "report_path"),
        "report_pdf": ("report_pdf", "pdf"),
        "manifest": ("manifest", "manifest_path"),
        "out_dir": ("out_dir", "output_dir"),
    }.items():
        for name in names:
            value = getattr(job_result, name, None)
            if value is None and isinstance(job_result, dict):
                value = job_result.get(name)
            if value:
                found[key] = Path(value)
                break
    out = found["out_dir"] or Path(out_dir)
    if found["report"] is None and (out / "report.html").exists():
        found["report"] = out / "report.html"
    if found["report_pdf"] is None and (out / "report.pdf").exists():
        found["report_pdf"] = out / "report.pdf"
    if found["manifest"] is None and (out / "manifest.json").exists():
        found["manifest"] = out / "manifest.json"
    return found
