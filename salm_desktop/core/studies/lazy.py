"""A Series whose robust intensity window is computed on first access.

``IntensityMap.robust`` needs pixel values; computing it while scanning would read pixels of every
MR series. ``LazyIntensitySeries`` is a plain :class:`Series` (same fields, ``isinstance`` works)
whose ``intensity`` attribute is computed by a factory the first time it is read, then cached.
Assigning ``series.intensity = ...`` still works and replaces the window.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from salm_desktop.core.model import IntensityMap, Sample, Series
from salm_desktop.core.studies.limits import PixelReadError


class LazyIntensitySeries(Series):
    _intensity_factory: Callable[[Series], IntensityMap] | None = None

    @property  # type: ignore[override]
    def intensity(self) -> IntensityMap:
        value = self.__dict__.get("_intensity")
        if value is None:
            lock = self.__dict__.setdefault("_intensity_lock", threading.Lock())
            with lock:
                value = self.__dict__.get("_intensity")
                if value is None:
                    factory = self.__dict__.get("_intensity_factory")
                    try:
                        value = factory(self) if factory is not None else IntensityMap(0.0, 1.0, "", "identity")
                    except PixelReadError:
                        raise
                    except ValueError as exc:  # no usable window: every file of this series is skipped
                        files = self.files
                        if not files:
                            raise
                        raise PixelReadError(files[0], f"no usable intensity window for this series ({exc})", files) from None
                    self.__dict__["_intensity"] = value
        return value

    @intensity.setter
    def intensity(self, value: IntensityMap | None) -> None:
        self.__dict__["_intensity"] = value

    def set_intensity_factory(self, factory: Callable[[Series], IntensityMap]) -> None:
        self.__dict__["_intensity_factory"] = factory

    @property
    def intensity_is_computed(self) -> bool:
        return self.__dict__.get("_intensity") is not None


def with_samples(series: Series, samples: list) -> Series:
    """A copy of ``series`` holding only ``samples`` (e.g. after a file was skipped).

    ``dataclasses.replace`` would compute a lazy window on the old samples (and fail on the file being
    dropped); here a window that is not computed yet is computed later from the kept samples.
    """
    import copy
    import dataclasses

    if not isinstance(series, LazyIntensitySeries):
        return dataclasses.replace(series, samples=samples)
    clone = copy.copy(series)
    clone.__dict__ = dict(series.__dict__)
    clone.samples = samples
    clone.__dict__["_intensity_lock"] = threading.Lock()
    if not series.intensity_is_computed:
        clone.set_intensity_factory(robust_intensity)
    return clone


def sample_values(samples: list[Sample], limit: int = 16) -> np.ndarray:
    """Pixel values of up to ``limit`` samples spread evenly over a series (enough for percentiles)."""
    if not samples:
        return np.zeros(0, np.float32)
    idx = np.unique(np.linspace(0, len(samples) - 1, num=min(limit, len(samples))).round().astype(int))
    return np.concatenate([samples[i].read().ravel() for i in idx])


def robust_intensity(series: Series) -> IntensityMap:
    """The robust (percentile) window of a series' pixels: the intensity factory of series without a window of their own."""
    return IntensityMap.robust(sample_values(series.samples))
