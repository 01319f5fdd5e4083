"""Long work off the UI thread.

A :class:`Worker` runs ``fn(progress)`` in a QThread. The core's :class:`Progress` is adapted to Qt
by a listener that only emits a signal (listeners run on the worker's thread); the UI thread
receives the events through a queued connection. Cancel calls ``progress.cancel()``: the core raises
:class:`Cancelled` at its next checkpoint and the worker reports ``cancelled``.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal

from salm_desktop.core.progress import Cancelled, Progress, ProgressEvent

from .workers_text import one_line

log = logging.getLogger(__name__)


def user_message(exc: BaseException) -> str:
    return one_line(exc)


class QtProgress(QObject):
    """Adapts a core :class:`Progress` to a Qt signal. Create it on the UI thread."""

    event = Signal(object)  # ProgressEvent

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.progress = Progress()
        self.progress.add_listener(self._emit)

    def _emit(self, event: ProgressEvent) -> None:  # called on the worker thread: emit only
        self.event.emit(event)

    def cancel(self) -> None:
        self.progress.cancel()


class Worker(QThread):
    """Runs ``fn(progress)`` on its own thread; exactly one of succeeded/failed/cancelled is emitted."""

    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    progressed = Signal(object)  # ProgressEvent, re-emitted on the UI thread

    def __init__(self, fn: Callable[[Progress], Any], parent: QObject | None = None, name: str = "work") -> None:
        super().__init__(parent)
        self.fn = fn
        self.name = name
        self.bridge = QtProgress()
        self.bridge.event.connect(self.progressed)
        self.result: Any = None
        self.error: str | None = None
        self.was_cancelled = False

    @property
    def progress(self) -> Progress:
        return self.bridge.progress

    def cancel(self) -> None:
        self.bridge.cancel()

    def run(self) -> None:  # worker thread
        try:
            self.result = self.fn(self.bridge.progress)
        except Cancelled:
            self.was_cancelled = True
            self.cancelled.emit()
            return
        except Exception as exc:  # shown as a one-line dialog; the traceback goes to the log only
            log.debug("%s failed:\n%s", self.name, traceback.format_exc())
            self.error = user_message(exc)
            self.failed.emit(self.error)
            return
        if self.bridge.progress.cancelled:
            self.was_cancelled = True
            self.cancelled.emit()
            return
        self.succeeded.emit(self.result)


def retire(worker: "Worker | None") -> None:
    """Schedule a finished worker for deletion (its parent would otherwise keep every one alive)."""
    if worker is not None and not worker.isRunning():
        worker.deleteLater()


class WorkerHost:
    """A page or dialog that runs one cancellable :class:`Worker` at a time.

    The host provides ``_progressed``, ``_failed``, ``_cancelled`` and ``_worker_done`` slots and keeps
    its worker in ``self.worker`` (``None`` before the first run).
    """

    worker: "Worker | None" = None
    busy_owner = ""  # the name this host's busy marks carry in the context

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    def cancel(self) -> None:
        if self.running:
            self.worker.cancel()

    def _adopt(self, worker: "Worker", on_success) -> None:  # noqa: ANN001
        """Wire ``worker`` to this host's slots and make it the current worker (the last one is retired)."""
        worker.progressed.connect(self._progressed)
        worker.succeeded.connect(on_success)
        worker.failed.connect(self._failed)
        worker.cancelled.connect(self._cancelled)
        # A retired worker's finished signal can arrive after the next run started (queued): it must not
        # reset the buttons of the run that is going on now.
        worker.finished.connect(lambda: self._worker_finished(worker))
        retire(self.worker)
        self.worker = worker

    def _worker_finished(self, worker: "Worker") -> None:
        if self.worker is worker:
            self._worker_done()
            return
        # A retired run whose thread ended after the next run started: its buttons are not touched,
        # but the busy mark it set (every host sets one per run) is released, or it would never be.
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            ctx.set_busy(False, self.busy_owner)
