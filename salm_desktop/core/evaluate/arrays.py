"""Series from plain arrays and MedMNIST-style npz splits (engine tests, benchmarks, evaluate CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from salm_desktop.core.model import IntensityMap, Sample, Series, SourceRef, StoredFormat, short_hash


def series_from_arrays(images: np.ndarray, labels, name: str = "arrays", path: Path | None = None,
                       intensity: IntensityMap | None = None, stored: StoredFormat | None = None) -> Series:
    images = np.asarray(images)
    stored = stored or StoredFormat.for_dtype(images.dtype if np.issubdtype(images.dtype, np.integer) else "float32")
    intensity = intensity or IntensityMap.for_uint8()
    path = path or Path(f"{name}.npz")
    samples = []
    for i in range(len(images)):
        arr = images[i]
        lab = None if labels is None else int(np.ravel(labels[i])[0])
        samples.append(Sample(key=f"{name}/{i}", shape=tuple(arr.shape),
                              reader=(lambda a=arr: a.astype(np.float32)), stored=stored,
                              source=SourceRef(path, key=name, index=(i,)), label=lab))
    return Series(short_hash(name, path), "npz", "OT", samples, intensity, path.parent)


def medmnist_series(npz: Path, split: str = "train", n: int | None = None) -> Series:
    with np.load(npz) as z:
        images = z[f"{split}_images"]
        labels = z[f"{split}_labels"]
    if n is not None:
        images, labels = images[:n], labels[:n]
    return series_from_arrays(images, labels, name=f"{npz.stem}_{split}", path=npz)
