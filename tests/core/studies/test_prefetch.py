"""Read-ahead of a unit's pixels on a background thread (used by batch to overlap reading with compute)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from salm_desktop.core.studies import load_paths
from salm_desktop.core.studies.prefetch import PixelPrefetcher


@pytest.fixture
def prostate(data_dir: Path):
    loaded = load_paths([data_dir / "dicom" / "qin_prostate_adc_mr" / "dicom"])
    assert len(loaded.series) == 1 and len(loaded.series[0].samples) == 20
    return loaded.series[0]


def test_prefetched_series_read_the_same_pixels(prostate) -> None:
    with PixelPrefetcher([prostate]) as reader:
        (copy,) = reader.series()
        assert [s.key for s in copy.samples] == [s.key for s in prostate.samples]
        assert copy.id == prostate.id and copy.files == prostate.files
        for original, fetched in zip(prostate.samples, copy.samples):
            first = fetched.read()  # from the buffer
            again = fetched.read()  # from the file
            assert np.array_equal(first, original.read()) and np.array_equal(again, first)
        assert reader.buffered_bytes == 0


def test_read_ahead_memory_stays_within_the_budget(prostate) -> None:
    one = prostate.samples[0].read().nbytes
    reader = PixelPrefetcher([prostate], max_bytes=3 * one).start()
    try:
        assert reader.wait_until_full(timeout=30)
        assert reader.buffered_bytes == 3 * one  # the producer waits for room, it does not read on
        copies = reader.series()[0].samples
        for smp in copies[:10]:  # consuming frees room and the producer continues
            smp.read()
            assert reader.buffered_bytes <= 3 * one
        assert reader.wait_until_full(timeout=30)
        assert reader.buffered_bytes == 3 * one
    finally:
        reader.close()
    assert reader.buffered_bytes == 0
    assert not [t for t in threading.enumerate() if t.name == "salm-prefetch"]


def test_a_file_that_breaks_before_its_turn_fails_with_its_name(prostate, data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "series"
    shutil.copytree(data_dir / "dicom" / "qin_prostate_adc_mr" / "dicom", folder)
    series = load_paths([folder]).series[0]
    victim = Path(series.samples[5].source.path)
    victim.write_bytes(victim.read_bytes()[:400])  # truncated after loading, before the read-ahead
    with PixelPrefetcher([series]) as reader:
        copies = reader.series()[0].samples
        with pytest.raises(Exception, match=victim.name):
            copies[5].read()
        assert np.array_equal(copies[6].read(), prostate.samples[6].read())


def test_consumer_ahead_of_the_producer_reads_for_itself(prostate) -> None:
    reader = PixelPrefetcher([prostate])  # never started: every read goes to the file
    copies = reader.series()[0].samples
    assert np.array_equal(copies[19].read(), prostate.samples[19].read())
    reader.close()
