"""The Preview step's logic (view + presenter): Qt-free, tested with a mocked view.

:class:`PreviewPresenter` keeps the series on screen, the cache of computed masks (keyed by
sample, ratio, method, foreground and seed), one mask job at a time with the newest request waiting,
and the words under the image. The view (:class:`~salm_desktop.gui.pages.preview.PreviewPage`)
owns the viewer, the controls, the debounce timer and the worker.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .. import services
from ..frames import SeriesFrames
from ..model import series_name

MASK_CACHE_SIZE = 64


class PreviewView(Protocol):
    """What the presenter needs of the page."""

    def show_series_choices(self, choices: Sequence[tuple[str, str]], current: str | None) -> None: ...
    def chosen_series_id(self) -> str | None: ...
    def current_frame(self) -> int: ...
    def mask_ratio_value(self) -> float: ...
    def set_mask_ratio(self, value: float) -> None: ...
    def show_frames(self, frames: SeriesFrames | None, window: tuple[float, float] | None) -> None: ...
    def render(self) -> None: ...
    def show_mask_status(self, text: str) -> None: ...
    def start_debounce(self) -> None: ...
    def mask_job_running(self) -> bool: ...
    def start_mask_job(self, job: Callable[[Any], Any], on_ready: Callable[[Any], None],
                       on_failed: Callable[[str], None], on_finished: Callable[[], None]) -> None: ...
    def emit_mask_ratio_changed(self, value: float) -> None: ...
    def emit_mask_updated(self) -> None: ...


def mask_status_text(mask: np.ndarray, ratio: float, method: str) -> str:
    """What the mask on screen means, in words."""
    share = 100 * float(np.mean(mask))
    if method == "em":
        return f"EM changes every pixel ({share:.1f} % shown); the mask ratio applies to SALM only."
    setting = f"mask ratio {ratio:.2f}" if ratio > 0 else "mask ratio auto"
    text = f"Mask: {share:.1f} % of this image's pixels may change ({setting})."
    if method == "salm" and ratio <= 0 and share > 25:  # auto on a 2D 8-bit image: the class texture's mask
        text += " SALM lays its class texture on the most salient pixels of the image's class."
    if method == "random":
        text += " The random baseline changes as many pixels, at random places instead of these."
    return text


class PreviewPresenter:
    def __init__(self, view: PreviewView, ctx: Any) -> None:
        self.view = view
        self.ctx = ctx
        self.frames: SeriesFrames | None = None
        self.masks: dict[tuple, np.ndarray] = {}
        self.pending: tuple | None = None  # a mask asked for while another was being computed
        self.mask_errors = 0

    # -- series ---------------------------------------------------------------------------------------
    def refresh_series(self) -> None:
        choices = [(f"{series_name(s)} · {s.description or s.kind} · {len(s.samples)} images", s.id)
                   for s in self.ctx.state.selected_series]
        self.view.show_series_choices(choices, self.view.chosen_series_id())
        self.series_chosen()

    def series_chosen(self) -> None:
        sid = self.view.chosen_series_id()
        series = self.ctx.state.series_by_id(sid) if sid else None
        self.frames = SeriesFrames(series) if series is not None else None
        window = None
        if series is not None:
            try:
                window = (series.intensity.low, series.intensity.high)
            except Exception:  # noqa: BLE001 - the viewer falls back to the pixels' own range
                window = None
        self.view.show_frames(self.frames, window)
        self.request_mask()

    # -- masks ------------------------------------------------------------------------------------------
    def key(self) -> tuple | None:
        """What the mask on screen depends on: (series, sample, ratio, method, foreground, seed)."""
        if self.frames is None or len(self.frames) == 0:
            return None
        s = self.ctx.settings
        index = self.frames.sample_index(self.view.current_frame())
        return (self.frames.series.id, index, round(self.view.mask_ratio_value(), 4), s.method, bool(s.foreground), int(s.seed))

    def mask_for_frame(self, frame: int) -> np.ndarray | None:
        key = self.key()
        mask = self.masks.get(key) if key is not None else None
        return self.frames.frame_mask(frame, mask) if mask is not None else None

    def current_mask(self) -> np.ndarray | None:
        key = self.key()
        return self.masks.get(key) if key is not None else None

    def request_mask(self) -> None:
        """Ask for the current sample's mask: from the cache now, or computed after the debounce."""
        key = self.key()
        if key is None:
            return
        if key in self.masks:
            self._show_status(key)
            self.view.render()
            return
        self.view.show_mask_status("Computing the mask…")
        self.view.start_debounce()

    def start_mask(self) -> None:
        """The debounce fired: compute the current mask, or leave it for when the running job ends."""
        key = self.key()
        if key is None or key in self.masks:
            self.view.render()
            return
        if self.view.mask_job_running():
            self.pending = key  # picked up when the running job ends
            return
        series = self.frames.series
        sample = series.samples[key[1]]
        ratio = key[2]
        settings = self.ctx.settings.copy()  # a snapshot: edits during the run do not leak in

        def job(progress):  # noqa: ANN001 - runs on the worker thread
            progress.check()
            return key, services.preview_mask(sample, series.intensity, settings, ratio)

        self.pending = None
        self.view.start_mask_job(job, self.mask_ready, self.mask_failed, self.mask_job_done)

    def mask_ready(self, result) -> None:  # noqa: ANN001 - (key, mask)
        key, mask = result
        self.masks[key] = np.asarray(mask, dtype=bool)
        if len(self.masks) > MASK_CACHE_SIZE:
            self.masks.pop(next(iter(self.masks)))
        if key == self.key():
            self._show_status(key)
            self.view.render()
            self.view.emit_mask_updated()

    def mask_failed(self, message: str) -> None:
        self.mask_errors += 1
        self.view.show_mask_status(f"The mask preview is not available: {message}")

    def mask_job_done(self) -> None:
        key = self.key()
        if key is not None and key not in self.masks and self.pending is not None:
            self.pending = None
            self.start_mask()

    def _show_status(self, key: tuple) -> None:
        self.view.show_mask_status(mask_status_text(self.masks[key], key[2], key[3]))

    # -- controls -----------------------------------------------------------------------------------------
    def ratio_changed(self, value: float) -> None:
        if abs(self.ctx.settings.mask_ratio - value) > 1e-9:
            self.ctx.settings.mask_ratio = value
            self.ctx.save_settings()
            self.view.emit_mask_ratio_changed(value)
        self.request_mask()

    def settings_changed(self) -> None:
        if abs(self.view.mask_ratio_value() - self.ctx.settings.mask_ratio) > 1e-9:
            self.view.set_mask_ratio(self.ctx.settings.mask_ratio)  # its change signal asks for the mask
        else:
            self.request_mask()
