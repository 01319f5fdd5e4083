"""Compact per-sample arrays: in memory when small, a numpy memmap in a temp folder when large.

The engine keeps the clean normalized images, the noise and the masks of every sample here, so
its memory use is bounded by the batch size plus this store, never by torch tensors of the
whole dataset.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

MEMMAP_THRESHOLD_BYTES = int(os.environ.get("SALM_MEMMAP_THRESHOLD", 256 * 1024 * 1024))


class ArrayStore:
    def __init__(self, shape: tuple[int, ...], dtype: str, threshold: int = MEMMAP_THRESHOLD_BYTES) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._tmpdir: str | None = None
        if nbytes > threshold:
            self._tmpdir = tempfile.mkdtemp(prefix="salm-store-")
            self.array = np.memmap(os.path.join(self._tmpdir, "store.bin"), dtype=self.dtype, mode="w+", shape=self.shape)
        else:
            self.array = np.zeros(self.shape, dtype=self.dtype)

    @property
    def on_disk(self) -> bool:
        return self._tmpdir is not None

    def __getitem__(self, idx):  # noqa: ANN001
        return self.array[idx]

    def __setitem__(self, idx, value) -> None:  # noqa: ANN001
        self.array[idx] = value

    def close(self) -> None:
        if self._tmpdir is not None:
            del self.array
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
