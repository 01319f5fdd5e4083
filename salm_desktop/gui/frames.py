"""What a viewer scrolls through: the 2D frames of a series, read lazily (no Qt here).

2D samples give one frame each; 3D samples (volumes, e.g. AdrenalMNIST3D) give one frame per slice
along their first axis. Pixels are read through ``Sample.read()`` (native float32) and a few recent
samples are cached, so that scrolling a folder of thousands of slices reads only what is shown.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from salm_desktop.core.model import Series

from .imaging import orientation_letters, slice_of, slice_position_mm


@lru_cache(maxsize=256)
def dicom_window(path: Path) -> tuple[float, float] | None:
    """The file's own window (WindowCenter/WindowWidth, in modality units after rescale), if any.

    Read with pydicom from the header only (no pixel data), when the loader did not keep it.
    """
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True,
                             specific_tags=["WindowCenter", "WindowWidth"])
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is None or width is None:
            return None
        center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
        width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
        return float(center), float(width)
    except Exception:
        return None


class SeriesFrames:
    def __init__(self, series: Series, cache_size: int = 8,
                 reader: Callable[[int], np.ndarray] | None = None) -> None:
        """``reader(i)`` overrides how sample ``i`` is read (the review's protected copy)."""
        self.series = series
        self._reader = reader
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self.frames: list[tuple[int, int | None]] = []
        for i, sample in enumerate(series.samples):
            shape = tuple(sample.shape)
            if len(shape) >= 3 and not (len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4):
                depth = int(np.prod(shape[:-2]))
                self.frames.extend((i, z) for z in range(depth))
            else:
                self.frames.append((i, None))

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def modality(self) -> str:
        return self.series.modality

    def sample_index(self, frame: int) -> int:
        return self.frames[self.clamp(frame)][0]

    def clamp(self, frame: int) -> int:
        return int(min(max(frame, 0), max(len(self.frames) - 1, 0)))

    def read_sample(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        if self._reader is not None:
            array = np.asarray(self._reader(index), dtype=np.float32)
        else:
            array = self.series.samples[index].read()
        self._cache[index] = array
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return array

    def frame(self, frame: int) -> np.ndarray:
        """The native 2D image of ``frame``."""
        if not self.frames:
            return np.zeros((1, 1), np.float32)
        index, depth = self.frames[self.clamp(frame)]
        array = self.read_sample(index)
        if depth is not None and array.ndim > 3:
            array = array.reshape((-1,) + array.shape[-2:])
        return slice_of(array, depth)

    def frame_mask(self, frame: int, mask: np.ndarray | None) -> np.ndarray | None:
        """The 2D part of a sample-shaped mask that belongs to ``frame``."""
        if mask is None or not self.frames:
            return None
        _, depth = self.frames[self.clamp(frame)]
        mask = np.asarray(mask)
        if mask.ndim > 3:
            mask = mask.reshape((-1,) + mask.shape[-2:])
        if mask.ndim == 3 and depth is None:
            return mask.any(axis=-1) if mask.shape[-1] in (3, 4) else mask[mask.shape[0] // 2]
        return slice_of(mask, depth)

    def meta(self, frame: int) -> dict:
        """Display metadata of a frame: sample meta over series meta (window, photometric)."""
        merged = dict(self.series.meta or {})
        if self.frames:
            sample = self.series.samples[self.sample_index(frame)]
            merged.update(sample.meta or {})
            if self.series.kind == "dicom" and "window_center" not in merged and "WindowCenter" not in merged:
                window = dicom_window(Path(sample.source.path))
                if window is not None:
                    merged["window_center"], merged["window_width"] = window
        return merged

    def describe(self, frame: int) -> str:
        """"image 2/3, slice 15, at -12.5 mm, label 1": where this frame is, once."""
        if not self.frames:
            return "no images"
        index, depth = self.frames[self.clamp(frame)]
        sample = self.series.samples[index]
        text = f"image {index + 1}/{len(self.series.samples)}"
        if depth is not None:
            text += f", slice {depth + 1}/{sample.shape[0] if len(sample.shape) >= 3 else 1}"
        position = self.slice_position_mm(frame)
        if position is not None:
            text += f", at {position:.1f} mm"
        if sample.label is not None:
            text += f", label {sample.label}"
        return text

    def _geometry(self, frame: int):
        return self.series.samples[self.sample_index(frame)].geometry if self.frames else None

    def pixel_spacing(self, frame: int) -> tuple[float, float] | None:
        """(row, column) spacing in mm of a 2D frame, when the file gives it."""
        geometry = self._geometry(frame)
        _, depth = self.frames[self.clamp(frame)] if self.frames else (0, None)
        if geometry is None or depth is not None or len(geometry.spacing) < 2:
            return None  # volumes in one sample: their axis order is not known here
        row, col = float(geometry.spacing[0]), float(geometry.spacing[1])
        return (row, col) if row > 0 and col > 0 else None

    def orientation_letters(self, frame: int) -> dict[str, str] | None:
        geometry = self._geometry(frame)
        _, depth = self.frames[self.clamp(frame)] if self.frames else (0, None)
        if geometry is None or depth is not None:
            return None
        return orientation_letters(geometry.orientation)

    def slice_position_mm(self, frame: int) -> float | None:
        geometry = self._geometry(frame)
        _, depth = self.frames[self.clamp(frame)] if self.frames else (0, None)
        if geometry is None or depth is not None:
            return None
        return slice_position_mm(geometry.position, geometry.orientation)

    @property
    def unit(self) -> str:
        try:
            return self.series.intensity.unit or ""
        except Exception:  # a lazy window that cannot be computed: values without a unit
            return ""
