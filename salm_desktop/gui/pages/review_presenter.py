"""The Review step's logic (view + presenter): Qt-free, tested with a mocked view.

:class:`ReviewPresenter` decides which series can be reviewed, runs the fidelity measurement and
words its results, the difference map's scale and the flicker; the view
(:class:`~salm_desktop.gui.pages.review.ReviewPage`) owns the two synchronized slice viewers.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from .. import services
from ..model import fidelity_rows, series_name


class ReviewView(Protocol):
    """What the presenter needs of the page."""

    def show_series_choices(self, choices: Sequence[tuple[str, str]]) -> None: ...
    def chosen_series_id(self) -> str | None: ...
    def show_series(self, series: Any, result: Any, window: tuple[float, float] | None) -> None: ...
    def show_left(self, original: bool) -> None: ...
    def show_fidelity(self, rows: list, status: str) -> None: ...
    def show_fidelity_status(self, text: str) -> None: ...
    def start_fidelity(self, job: Callable[[Any], Any], on_done: Callable[[dict], None],
                       on_failed: Callable[[str], None]) -> None: ...
    def stop_fidelity(self) -> None: ...
    def emit_fidelity_ready(self) -> None: ...


def _unit(series) -> str:  # noqa: ANN001
    try:
        return series.intensity.unit if series is not None else ""
    except Exception:  # noqa: BLE001 - a lazy window that cannot be computed has no unit
        return ""


class ReviewPresenter:
    def __init__(self, view: ReviewView, ctx: Any, noise_sd: Callable[[Any], float | None] | None = None) -> None:
        self.view = view
        self.ctx = ctx
        self.fidelity: dict[str, dict[str, float]] = {}
        self.flicker_phase = False
        self._noise_sd = noise_sd
        self._noise: dict[str, float | None] = {}

    def _protected_series(self) -> list:
        state = self.ctx.state
        return [s for s in (state.series_by_id(i) for i in state.protected_ids) if s is not None]

    # -- which series -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """A new protection result: offer its series, show the first, measure the fidelity."""
        series = self._protected_series() if self.ctx.state.protect_result is not None else []
        self.view.show_series_choices([(f"{series_name(s)} · {s.description or s.kind}", s.id) for s in series])
        self.series_chosen()
        self.compute_fidelity()

    def series_chosen(self) -> None:
        sid = self.view.chosen_series_id()
        series = self.ctx.state.series_by_id(sid) if sid else None
        result = self.ctx.state.protect_result
        if series is None or result is None:
            series = result = None
        try:
            window = (series.intensity.low, series.intensity.high) if series is not None else None
        except Exception:  # noqa: BLE001 - the viewer falls back to the pixels' own range
            window = None
        self.view.show_series(series, result, window)

    def clear(self) -> None:
        """The study went: stop measuring and forget the numbers (the view empties its viewers)."""
        self.view.stop_fidelity()
        self.fidelity = {}

    # -- difference map and flicker ---------------------------------------------------------------------
    def difference_text(self, series, scale: float) -> str:  # noqa: ANN001
        """"Difference map: full colour = ±62.7 HU = 0.35 × the scan's noise SD (12.1 HU)"."""
        unit = _unit(series)
        return f"Difference map: full colour = ±{scale:.4g} {unit}".rstrip() + self._relative_to_noise(series, scale, unit)

    def _relative_to_noise(self, series, change: float, unit: str) -> str:  # noqa: ANN001
        """The change relative to the series' own noise (issue 13); "" when it cannot be measured."""
        try:
            if series.id not in self._noise:
                noise_sd = self._noise_sd
                if noise_sd is None:
                    from salm_desktop.core.protect.engine import series_noise_sd as noise_sd
                self._noise[series.id] = noise_sd(series)
            noise = self._noise[series.id]
        except Exception:  # noqa: BLE001 - the figure is a hint; never break the review for it
            return ""
        if not noise:
            return ""
        return f" = {change / noise:.2f} × the scan's noise SD ({f'{noise:.3g} {unit}'.strip()})"

    def flicker_toggled(self, on: bool) -> None:
        if not on:
            self.flicker_phase = False
            self.view.show_left(original=True)

    def flicker_tick(self) -> None:
        self.flicker_phase = not self.flicker_phase
        self.view.show_left(original=not self.flicker_phase)

    # -- fidelity -----------------------------------------------------------------------------------------
    def compute_fidelity(self) -> None:
        result = self.ctx.state.protect_result
        if result is None:
            return
        series = self._protected_series()
        self.view.stop_fidelity()

        def job(progress):  # noqa: ANN001 - runs on the worker thread
            return {s.id: services.series_fidelity(s, result, progress) for s in series}

        self.view.show_fidelity_status("Measuring fidelity…")
        self.view.start_fidelity(job, self.fidelity_done,
                                 lambda message: self.view.show_fidelity_status(f"Fidelity not available: {message}"))

    def fidelity_done(self, numbers: dict) -> None:
        state = self.ctx.state
        self.fidelity = numbers
        units = {sid: _unit(state.series_by_id(sid)) for sid in numbers}
        sampled = [sid for sid, m in numbers.items()
                   if (s := state.series_by_id(sid)) is not None and m.get("samples_measured", 0) < len(s.samples)]
        self.view.show_fidelity(fidelity_rows(numbers, units),
                                "Measured on an evenly spaced subset of images for: " + ", ".join(sampled)
                                if sampled else "Measured on every image.")
        self.view.emit_fidelity_ready()
