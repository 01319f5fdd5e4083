"""ArrayStore: small arrays in memory, large ones in a memmap that close() removes (real pixels)."""

from __future__ import annotations

import os

import numpy as np

from salm_desktop.core.protect.store import ArrayStore


def _images(medmnist_dir):
    with np.load(medmnist_dir / "pneumoniamnist.npz") as d:
        return d["train_images"][:32].astype(np.float32) / 255.0


def test_small_store_is_in_memory(medmnist_dir):
    images = _images(medmnist_dir)
    store = ArrayStore(images.shape, "float32")
    assert not store.on_disk and store.array.dtype == np.float32 and not store.array.any()
    store[3] = images[3]
    np.testing.assert_array_equal(store[3], images[3])
    store.close()


def test_large_store_is_a_memmap_removed_on_close(medmnist_dir):
    images = _images(medmnist_dir)
    store = ArrayStore(images.shape, "float32", threshold=images.nbytes - 1)
    assert store.on_disk and isinstance(store.array, np.memmap)
    folder = os.path.dirname(store.array.filename)
    assert os.path.isfile(os.path.join(folder, "store.bin"))
    store[:] = images
    store[5, :2] = 0.0
    np.testing.assert_array_equal(store[6], images[6])
    assert float(store[5, :2].sum()) == 0.0 and float(store[5, 2:].sum()) == float(images[5, 2:].sum())
    store.close()
    assert not os.path.exists(folder) and not store.on_disk
    store.close()  # idempotent
