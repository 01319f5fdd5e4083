"""One progress + cancel object shared by the CLI, the GUI and the tests.

Long core functions take a ``Progress`` and call :meth:`Progress.update` at natural checkpoints
(a batch, a file, a round); each update is also a cancellation point. The GUI adapts it to Qt
signals by adding a listener, the CLI to a terminal bar, tests to a list. Listeners are called on the
worker's thread (batch's log lines also on its background writer's): a GUI listener must only emit a signal.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


class Cancelled(Exception):
    """Raised at a checkpoint after :meth:`Progress.cancel` was called."""


@dataclass(frozen=True)
class ProgressEvent:
    stage: str  # "load", "protect", "export", "evaluate", ...
    done: int
    total: int
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"round": 3, "surrogate_accuracy": 0.91}
    elapsed_s: float = 0.0
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


Listener = Callable[[ProgressEvent], None]


class Progress:
    def __init__(self, listener: Listener | None = None) -> None:
        self._listeners: list[Listener] = [listener] if listener else []
        self._cancel = threading.Event()
        self._stage_started: dict[str, float] = {}
        self._log: list[str] = []
        self._lock = threading.Lock()

    # -- cancellation -------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """A cancellation point: raises :class:`Cancelled` once cancel() was called."""
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")

    # -- reporting ----------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def update(self, stage: str, done: int, total: int, message: str = "", **metrics: Any) -> None:
        """Report progress of ``stage`` and check for cancellation."""
        now = time.monotonic()
        with self._lock:
            started = self._stage_started.setdefault(stage, now)
        elapsed = now - started
        eta = None
        if 0 < done < total and elapsed > 0:
            eta = elapsed / done * (total - done)
        event = ProgressEvent(stage, done, total, message, dict(metrics), elapsed, eta)
        for listener in list(self._listeners):
            listener(event)
        self.check()

    def restart_stage(self, stage: str) -> None:
        with self._lock:
            self._stage_started.pop(stage, None)

    def log(self, message: str) -> None:
        """A line for the user's log (never patient names or IDs)."""
        with self._lock:
            self._log.append(message)
        for listener in list(self._listeners):
            listener(ProgressEvent("log", 0, 0, message))

    def log_only(self) -> "Progress":
        """A Progress for work that runs beside this one's (a background writer).

        Only its log lines reach this one's listeners, so that a terminal or GUI bar that shows this
        job's stage is not overdrawn by a second stage. It has its own cancel flag: work that must
        finish once started (writing a unit whose protection is complete) is not stopped by a cancel
        of the main work.
        """
        child = Progress()

        def forward(event: ProgressEvent) -> None:
            if event.stage == "log":
                self.log(event.message)

        child._listeners.append(forward)
        return child

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return list(self._log)


def null_progress() -> Progress:
    return Progress()
