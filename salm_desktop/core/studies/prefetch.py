"""Read (decode) the pixels of the next series on a background thread while the current one computes.

Batch runs protect one unit after the other; without read-ahead the device waits while the next
unit's files are opened and decoded. :class:`PixelPrefetcher` decodes samples in order into a bounded
buffer (``max_bytes``); :meth:`PixelPrefetcher.series` returns copies of the series whose samples take
their first read from that buffer. Memory stays bounded: the buffer stops filling at ``max_bytes``
and each array leaves it on its first use; later reads (the writer re-reads the source for exact
untouched pixels) go to the file as before. A read that fails in the background is simply repeated
by the consumer, so the error message comes from the usual place and names the file.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import threading
from typing import Sequence

import numpy as np

from salm_desktop.core.model import Sample, Series
from salm_desktop.core.studies.lazy import LazyIntensitySeries

_PENDING, _LOADING, _READY, _TAKEN = range(4)


class PixelPrefetcher:
    def __init__(self, series: Sequence[Series], max_bytes: int = 256 * 2**20) -> None:
        self._series = list(series)
        self._samples: list[Sample] = [smp for ser in self._series for smp in ser.samples]
        self._state = [_PENDING] * len(self._samples)
        self._arrays: dict[int, np.ndarray] = {}
        self._bytes = 0
        self._max_bytes = int(max_bytes)
        self._stop = False
        self._waiting = False  # the producer waits for room in the buffer
        self._finished = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="salm-prefetch", daemon=True)
        self._started = False

    # -- producer ------------------------------------------------------------------------------
    def start(self) -> "PixelPrefetcher":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._read_ahead()
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _read_ahead(self) -> None:
        for ser in self._series:  # a lazy intensity window reads a few samples of its own: do it here too
            if self._stop:
                return
            try:
                ser.intensity
            except Exception:  # noqa: BLE001 - the consumer meets the same error where it is reported
                pass
        for i, sample in enumerate(self._samples):
            with self._cond:
                # At least one array may always be buffered, so a single sample larger than the
                # budget is still read ahead.
                while self._bytes and self._bytes >= self._max_bytes and not self._stop:
                    self._waiting = True
                    self._cond.notify_all()
                    self._cond.wait()
                self._waiting = False
                if self._stop:
                    return
                if self._state[i] != _PENDING:
                    continue  # the consumer got there first
                self._state[i] = _LOADING
            try:
                array: np.ndarray | None = sample.read()
            except Exception:  # noqa: BLE001 - the consumer repeats the read and reports the error
                array = None
            with self._cond:
                if array is not None and not self._stop:
                    self._arrays[i] = array
                    self._bytes += array.nbytes
                    self._state[i] = _READY
                else:
                    self._state[i] = _PENDING
                self._cond.notify_all()

    # -- consumer ------------------------------------------------------------------------------
    def _take(self, index: int) -> np.ndarray:
        """A sample's read: the buffered array the first time, the file after that (state _TAKEN)."""
        with self._cond:
            while self._state[index] == _LOADING:
                self._cond.wait()
            array = self._arrays.pop(index, None)
            if array is not None:
                self._bytes -= array.nbytes
            self._state[index] = _TAKEN
            self._cond.notify_all()
        return array if array is not None else self._samples[index].read()

    def series(self) -> list[Series]:
        """The series, with samples whose first read comes from the buffer (same keys and sources)."""
        out: list[Series] = []
        index = 0
        for ser in self._series:
            samples = []
            for smp in ser.samples:
                samples.append(dataclasses.replace(smp, reader=functools.partial(self._take, index)))
                index += 1
            out.append(_with_samples(ser, samples))
        return out

    def wait_until_full(self, timeout: float | None = None) -> bool:
        """Wait until the producer has filled the buffer and waits for room, or has read everything.

        False when ``timeout`` (seconds) passed first. Lets a caller (or a test) see the buffer at
        rest without polling.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: (self._waiting and self._bytes >= self._max_bytes) or self._finished or self._stop, timeout
            )

    @property
    def buffered_bytes(self) -> int:
        with self._cond:
            return self._bytes

    def close(self) -> None:
        """Stop reading ahead and free the buffer (idempotent)."""
        with self._cond:
            self._stop = True
            self._arrays.clear()
            self._bytes = 0
            self._cond.notify_all()
        if self._started:
            self._thread.join()

    def __enter__(self) -> "PixelPrefetcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _with_samples(series: Series, samples: list[Sample]) -> Series:
    """A copy of ``series`` with other samples. A window that is not computed yet stays lazy and comes
    from the original series (``dataclasses.replace`` would compute it here, on the caller's thread)."""
    clone = copy.copy(series)
    clone.samples = samples
    if isinstance(series, LazyIntensitySeries) and not series.intensity_is_computed:
        clone.__dict__["_intensity_lock"] = threading.Lock()
        clone.set_intensity_factory(lambda _clone: series.intensity)
    return clone

