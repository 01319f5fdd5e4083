"""The one data model every layer shares.

A study folder becomes :class:`Series` objects (a DICOM series, a NIfTI volume, an npz split, a
folder of 2D images). Each holds :class:`Sample` s: the unit the engine perturbs (a 2D slice or
image, or a 3D volume), with its label, geometry and where it came from. Pixels are read lazily
through the sample's ``reader`` so that indexing thousands of files loads no pixel data.

Native units are the truth: ``Sample.read()`` returns modality values (HU for CT after rescale,
raw values for MR, 0..255 for 8-bit images) as float32. The engine works in a normalized scale
through the series' :class:`IntensityMap` and hands back native values that :class:`StoredFormat`
has already rounded and clipped to what the file can hold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class IntensityMap:
    """Linear, invertible map native -> normalized: ``(native - low) / (high - low)``.

    ``low..high`` is the window a reader looks at (CT: the file's own WindowCenter/WindowWidth, else
    soft tissue W400; MR: a percentile range; 8-bit: 0..255), so a budget of 8/255 of it is as
    visible as 8/255 of an 8-bit displayed image. The map itself never clips: pixels outside the
    window (air, bone) keep their values and are changed by at most the budget in native units; the
    engine clips only the surrogate's *input* to [0, 1] (what the reader sees) and the stored values
    to :class:`StoredFormat`'s range.
    """

    low: float
    high: float
    unit: str = ""  # "HU" for CT, "" for arbitrary units
    name: str = "identity"  # how the window was chosen, for reports: "CT window", "p0.5-p99.5", ...

    def __post_init__(self) -> None:
        if not np.isfinite(self.low) or not np.isfinite(self.high) or self.high <= self.low:
            raise ValueError(f"invalid intensity window [{self.low}, {self.high}]")

    @property
    def width(self) -> float:
        return float(self.high - self.low)

    def normalize(self, native: np.ndarray) -> np.ndarray:
        return ((np.asarray(native, dtype=np.float32) - self.low) / self.width).astype(np.float32)

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        return (np.asarray(normalized, dtype=np.float32) * self.width + self.low).astype(np.float32)

    def delta_to_native(self, delta: float) -> float:
        """A change in the normalized scale expressed in native units (e.g. 8/255 -> 62.7 HU)."""
        return float(delta) * self.width

    def describe_budget(self, epsilon: float) -> str:
        native = self.delta_to_native(epsilon)
        unit = f" {self.unit}" if self.unit else ""
        return f"±{epsilon:.4f} (±{native:.3g}{unit})"

    @staticmethod
    def for_uint8() -> "IntensityMap":
        return IntensityMap(0.0, 255.0, "", "8-bit identity/255")

    @staticmethod
    def for_ct() -> "IntensityMap":
        # CT without a window of its own: the soft-tissue window C40/W400 a reader most often uses,
        # so that 8/255 is +/-12.5 HU, as visible as 8/255 of an 8-bit displayed image.
        return IntensityMap(-160.0, 240.0, "HU", "CT soft-tissue window C40/W400 (default: no window in the file)")

    @staticmethod
    def for_window(center: float, width: float, unit: str = "", source: str = "file's window") -> "IntensityMap":
        """The reader's display window (DICOM WindowCenter/WindowWidth, linear): ``center +/- width/2``.

        Raises ValueError with a one-line reason for a window a reader could not use (width <= 0,
        not a finite number), never silently falls back to another range.
        """
        try:
            c, w = float(center), float(width)
        except (TypeError, ValueError):
            raise ValueError(f"window center/width {center!r}/{width!r} are not numbers") from None
        if not (np.isfinite(c) and np.isfinite(w)):
            raise ValueError(f"window center/width {center!r}/{width!r} are not finite")
        if w <= 0:
            raise ValueError(f"window width {width!r} is not positive")
        return IntensityMap(c - w / 2.0, c + w / 2.0, unit, f"{source} C{c:g}/W{w:g}")

    @staticmethod
    def robust(values: np.ndarray, lower_pct: float = 0.5, upper_pct: float = 99.5, unit: str = "") -> "IntensityMap":
        """Percentile window for MR and other arbitrary-unit data."""
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            return IntensityMap(0.0, 1.0, unit, "empty")
        low, high = np.percentile(finite, [lower_pct, upper_pct])
        if high <= low:  # constant or nearly constant image: fall back to the full range
            low, high = float(finite.min()), float(finite.max())
            if high <= low:
                high = low + 1.0
        return IntensityMap(float(low), float(high), unit, f"p{lower_pct:g}-p{upper_pct:g}")


@dataclass(frozen=True)
class StoredFormat:
    """How native values are stored on disk: ``native = stored * slope + intercept``.

    ``minimum``/``maximum`` are the representable stored values (BitsStored, signedness, 0..255).
    """

    dtype: str  # numpy dtype name of the stored values, e.g. "int16", "uint8", "float32"
    minimum: float
    maximum: float
    slope: float = 1.0
    intercept: float = 0.0

    @property
    def is_integer(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype), np.integer)

    def to_stored(self, native: np.ndarray) -> np.ndarray:
        """Native -> stored array of ``dtype``: rounded (not truncated) and clipped."""
        stored = (np.asarray(native, dtype=np.float64) - self.intercept) / self.slope
        if self.is_integer:
            stored = np.rint(stored)
        stored = np.clip(stored, self.minimum, self.maximum)
        return stored.astype(self.dtype)

    def to_native(self, stored: np.ndarray) -> np.ndarray:
        return (np.asarray(stored, dtype=np.float64) * self.slope + self.intercept).astype(np.float32)

    def quantize(self, native: np.ndarray) -> np.ndarray:
        """The native values the file will really hold after a write."""
        return self.to_native(self.to_stored(native))

    @staticmethod
    def for_dtype(dtype: Any, slope: float = 1.0, intercept: float = 0.0, bits_stored: int | None = None) -> "StoredFormat":
        dt = np.dtype(dtype)
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            lo, hi = float(info.min), float(info.max)
            if bits_stored is not None and bits_stored < dt.itemsize * 8:
                if info.min < 0:
                    lo, hi = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
                else:
                    lo, hi = 0.0, float(2**bits_stored - 1)
        else:
            info = np.finfo(dt)
            lo, hi = float(info.min), float(info.max)
        return StoredFormat(dt.name, lo, hi, float(slope), float(intercept))


@dataclass(frozen=True)
class Geometry:
    """Where a sample sits in patient space.

    ``spacing`` is per array axis of the sample (row, column[, slice]) in mm. DICOM samples carry
    ``position`` (ImagePositionPatient) and ``orientation`` (ImageOrientationPatient, 6 values);
    NIfTI samples carry the volume ``affine`` (RAS, 4x4) and their ``slice_index``.
    """

    spacing: tuple[float, ...] = ()
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    affine: tuple[tuple[float, ...], ...] | None = None
    slice_index: int | None = None


@dataclass(frozen=True)
class SourceRef:
    """Where a sample's pixels came from; writers use it to find the original object again."""

    path: Path
    frame: int | None = None  # multi-frame DICOM frame, or slice index in a NIfTI volume
    key: str | None = None  # npz array key ("train_images") or relative path inside an image folder
    index: tuple[int, ...] = ()  # position inside that array, e.g. (sample,) or (time, slice)


@dataclass
class Sample:
    key: str  # unique inside its series; stable across runs (used for seeds, UID maps, manifests)
    shape: tuple[int, ...]
    reader: Callable[[], np.ndarray]  # returns native float32 values of ``shape``
    stored: StoredFormat
    source: SourceRef
    geometry: Geometry = field(default_factory=Geometry)
    label: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def read(self) -> np.ndarray:
        array = np.asarray(self.reader(), dtype=np.float32)
        if array.shape != tuple(self.shape):
            raise ValueError(f"{self.source.path}: expected pixels of shape {self.shape}, got {array.shape}")
        return array

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass
class Series:
    """A group of samples that belong together and are written back together."""

    id: str  # short hash, never a patient identifier
    kind: str  # "dicom" | "nifti" | "npz" | "images"
    modality: str  # "CT", "MR", "US", "CR", "OT", ...
    samples: list[Sample]
    intensity: IntensityMap
    root: Path  # the input path the user gave that this series was found under
    description: str = ""
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # format-specific details for writers

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        shapes = {s.shape for s in self.samples}
        return shapes.pop() if len(shapes) == 1 else None

    @property
    def labels(self) -> list[int | None]:
        return [s.label for s in self.samples]

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for label in self.labels:
            name = "unlabelled" if label is None else str(label)
            counts[name] = counts.get(name, 0) + 1
        return counts

    @property
    def files(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for s in self.samples:
            seen.setdefault(s.source.path, None)
        return list(seen)


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class LoadResult:
    series: list[Series] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def extend(self, other: "LoadResult") -> None:
        self.series.extend(other.series)
        self.skipped.extend(other.skipped)


def short_hash(*parts: object, length: int = 10) -> str:
    """A stable, non-identifying id: logs and reports use it instead of names or UIDs."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return digest[:length]


def stack_samples(samples: Sequence[Sample]) -> np.ndarray:
    """Read samples of one shape into one array (N, *shape)."""
    return np.stack([s.read() for s in samples]) if samples else np.empty((0,), np.float32)
