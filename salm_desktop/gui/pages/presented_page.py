"""What every page built as view + presenter shares: its worker's slots go to the presenter."""

from __future__ import annotations

from typing import Any

from ..workers import Worker, WorkerHost


class PresentedPage(WorkerHost):
    """A page (the view) whose presenter has ``progressed``, ``failed``, ``cancelled`` and ``worker_done``.

    The page defines ``presenter``, ``worker_name`` and a ``finished`` signal.
    """

    presenter: Any
    worker_name = "work"

    def _progressed(self, event) -> None:  # noqa: ANN001 - a core ProgressEvent
        self.presenter.progressed(event)

    def _failed(self, message: str) -> None:
        self.presenter.failed(message)

    def _cancelled(self) -> None:
        self.presenter.cancelled()

    def _worker_done(self) -> None:
        self.presenter.worker_done()

    def start_worker(self, job, on_success) -> None:  # noqa: ANN001
        worker = Worker(job, self, name=self.worker_name)
        self._adopt(worker, on_success)
        worker.start()

    def emit_finished(self, outcome) -> None:  # noqa: ANN001 - what the page's finished signal carries
        self.finished.emit(outcome)
