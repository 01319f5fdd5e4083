"""Display maths for the viewers, with no Qt in it so that it is testable on plain arrays.

Window/level (the radiology convention: ``center``/``width`` in native units), the standard CT and
MR presets, the file's own window (DICOM WindowCenter/WindowWidth when the loader kept them),
MONOCHROME1 inversion, the mask overlay and the difference map colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Window:
    center: float
    width: float

    @property
    def low(self) -> float:
        return self.center - self.width / 2.0

    @property
    def high(self) -> float:
        return self.center + self.width / 2.0

    @staticmethod
    def from_range(low: float, high: float) -> "Window":
        if not np.isfinite(low) or not np.isfinite(high):
            low, high = 0.0, 1.0
        if high <= low:
            high = low + 1.0
        return Window((low + high) / 2.0, high - low)


# Standard CT presets (center, width) in HU, as most PACS viewers ship them.
CT_PRESETS: dict[str, Window] = {
    "CT soft tissue": Window(40, 400),
    "CT abdomen": Window(60, 400),
    "CT lung": Window(-600, 1500),
    "CT bone": Window(400, 1800),
    "CT brain": Window(40, 80),
    "CT mediastinum": Window(50, 350),
}

FILE_WINDOW = "File window"
AUTO_WINDOW = "Auto (p1-p99)"
HIGH_CONTRAST = "High contrast (p5-p95)"
FULL_RANGE = "Full range"
PROTECTION_WINDOW = "Protection window"


def auto_window(image: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> Window:
    """A robust window from percentiles: the usual MR default (MR has no absolute units)."""
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Window(0.5, 1.0)
    low, high = np.percentile(values, [lower, upper])
    if high <= low:
        low, high = float(values.min()), float(values.max())
    return Window.from_range(float(low), float(high))


def full_window(image: np.ndarray) -> Window:
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Window(0.5, 1.0)
    return Window.from_range(float(values.min()), float(values.max()))


def file_window(meta: dict[str, Any] | None) -> Window | None:
    """The window stored in the file (DICOM WindowCenter/WindowWidth), if the loader kept it.

    Multi-valued DICOM windows give several pairs; the first one is the default, as in viewers.
    """
    if not meta:
        return None
    center = meta.get("window_center", meta.get("WindowCenter"))
    width = meta.get("window_width", meta.get("WindowWidth"))
    if center is None or width is None:
        return None
    try:
        if isinstance(center, (list, tuple)) or (hasattr(center, "__len__") and not isinstance(center, str)):
            center = list(center)[0]
        if isinstance(width, (list, tuple)) or (hasattr(width, "__len__") and not isinstance(width, str)):
            width = list(width)[0]
        center_f, width_f = float(center), float(width)
    except (TypeError, ValueError, IndexError):
        return None
    if not np.isfinite(center_f) or not np.isfinite(width_f) or width_f <= 0:
        return None
    return Window(center_f, width_f)


def presets_for(modality: str, has_file_window: bool) -> list[str]:
    """Preset names offered for a series; the first one is the default."""
    names: list[str] = []
    if has_file_window:
        names.append(FILE_WINDOW)
    if (modality or "").upper() == "CT":
        names += list(CT_PRESETS)
        names += [AUTO_WINDOW, HIGH_CONTRAST, FULL_RANGE, PROTECTION_WINDOW]
    else:  # MR and other arbitrary-unit data: percentile windows, as MR viewers do
        names += [AUTO_WINDOW, HIGH_CONTRAST, FULL_RANGE, PROTECTION_WINDOW]
    return names


def resolve_preset(name: str, image: np.ndarray, meta: dict[str, Any] | None = None,
                   intensity_low_high: tuple[float, float] | None = None) -> Window:
    """Turn a preset name into a window for ``image``."""
    if name in CT_PRESETS:
        return CT_PRESETS[name]
    if name == FILE_WINDOW:
        window = file_window(meta)
        if window is not None:
            return window
    if name == FULL_RANGE:
        return full_window(image)
    if name == HIGH_CONTRAST:
        return auto_window(image, 5.0, 95.0)
    if name == PROTECTION_WINDOW and intensity_low_high is not None:
        return Window.from_range(*intensity_low_high)
    return auto_window(image)


def apply_window(image: np.ndarray, window: Window, invert: bool = False) -> np.ndarray:
    """Native values -> uint8 grey levels through a linear window (MONOCHROME1: ``invert``)."""
    image = np.asarray(image, dtype=np.float32)
    width = max(float(window.width), 1e-6)
    scaled = (image - (window.center - width / 2.0)) / width
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0)
    if invert:
        scaled = 1.0 - scaled
    return np.rint(scaled * 255.0).astype(np.uint8)


def is_monochrome1(meta: dict[str, Any] | None) -> bool:
    if not meta:
        return False
    value = meta.get("photometric", meta.get("PhotometricInterpretation", ""))
    return str(value).upper() == "MONOCHROME1"


def mask_overlay(mask: np.ndarray, color: Sequence[int] = (255, 40, 40), opacity: float = 0.5) -> np.ndarray:
    """Boolean mask -> RGBA uint8 image (transparent where the mask is False)."""
    mask = np.asarray(mask, dtype=bool)
    rgba = np.zeros(mask.shape + (4,), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = color[0], color[1], color[2]
    alpha = int(round(np.clip(opacity, 0.0, 1.0) * 255))
    rgba[..., 3] = np.where(mask, alpha, 0).astype(np.uint8)
    return rgba


def difference_rgb(original: np.ndarray, protected: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Signed difference map as RGB: blue = darker, red = brighter, black = unchanged.

    ``scale`` is the native change shown at full colour (default: the largest change in the slice).
    Returns the RGB image and the scale used.
    """
    diff = np.asarray(protected, np.float32) - np.asarray(original, np.float32)
    if scale is None or scale <= 0:
        scale = float(np.max(np.abs(diff))) if diff.size else 0.0
    if scale <= 0:
        scale = 1.0
    mag = np.clip(np.abs(diff) / scale, 0.0, 1.0)
    rgb = np.zeros(diff.shape + (3,), dtype=np.uint8)
    level = np.rint(mag * 255).astype(np.uint8)
    rgb[..., 0] = np.where(diff > 0, level, 0)
    rgb[..., 2] = np.where(diff < 0, level, 0)
    # a faint green for very small changes so that they are visible at all
    rgb[..., 1] = np.where(diff != 0, np.rint(mag * 80).astype(np.uint8), 0)
    return rgb, scale


def slice_of(array: np.ndarray, depth_index: int | None) -> np.ndarray:
    """A 2D view of a sample: 2D samples as they are, 3D samples at ``depth_index`` along axis 0."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        if array.shape[-1] in (3, 4) and array.shape[0] > 4 and depth_index is None:
            return array.mean(axis=-1)  # RGB image kept as 3 channels by a reader
        k = array.shape[0] // 2 if depth_index is None else int(np.clip(depth_index, 0, array.shape[0] - 1))
        return array[k]
    if array.ndim > 3:
        return slice_of(array.reshape((-1,) + array.shape[-2:]), depth_index)
    return np.atleast_2d(array)


# -- geometry on screen ----------------------------------------------------------------------------

_LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # (negative, positive) end of each DICOM LPS axis


def _direction_letter(vector: Sequence[float]) -> str:
    """The patient direction a screen direction points to: "L", "P", "S"... ("" when oblique
    enough that no axis dominates, i.e. none above cos 55°)."""
    v = np.asarray(vector, dtype=float)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or not np.any(v):
        return ""
    v = v / np.linalg.norm(v)
    axis = int(np.argmax(np.abs(v)))
    if abs(v[axis]) < 0.57:
        return ""
    return _LPS_LETTERS[axis][1 if v[axis] > 0 else 0]


def orientation_letters(orientation: Sequence[float] | None) -> dict[str, str] | None:
    """{"left", "right", "top", "bottom"} -> patient direction letters, from DICOM
    ImageOrientationPatient (row direction cosines, then column direction cosines, in LPS).

    The row direction is where the column index grows (towards the right edge of the screen), the
    column direction where the row index grows (towards the bottom), as radiology viewers show it.
    """
    if orientation is None or len(orientation) != 6:
        return None
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    right, bottom = _direction_letter(row), _direction_letter(col)
    if not right and not bottom:
        return None
    return {"right": right, "left": _direction_letter(-row), "bottom": bottom, "top": _direction_letter(-col)}


def slice_position_mm(position: Sequence[float] | None, orientation: Sequence[float] | None) -> float | None:
    """Where a DICOM slice sits along its normal (ImagePositionPatient · (row × column)), in mm."""
    if position is None or orientation is None or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    value = float(np.dot(np.asarray(position, float), normal))
    return value if np.isfinite(value) else None


def scale_bar_mm(mm_per_screen_pixel: float, target_pixels: float = 100.0) -> float | None:
    """A round length (1, 2, 5 × 10^k mm) whose bar is at most about ``target_pixels`` long."""
    if not np.isfinite(mm_per_screen_pixel) or mm_per_screen_pixel <= 0:
        return None
    want = target_pixels * mm_per_screen_pixel
    exponent = np.floor(np.log10(want))
    for step in (5.0, 2.0, 1.0):
        length = step * 10.0 ** exponent
        if length <= want:
            return float(length)
    return float(10.0 ** exponent)


def value_text(value: float, unit: str = "") -> str:
    """A pixel value as a person reads it: "-45 HU", "1234", "0.532"."""
    if not np.isfinite(value):
        return "–"
    text = f"{value:.0f}" if abs(value - round(value)) < 1e-6 or abs(value) >= 1000 else f"{value:.4g}"
    return f"{text} {unit}".strip()
