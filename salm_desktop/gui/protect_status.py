"""The Protect page's logic without widgets: progress events folded into a status (rounds, accuracy,
time left) and a finished run's summary in words and units."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence


def epsilon_text(value: float) -> str:
    """0.0313... -> "8/255" when it is a whole number of 255ths, else a decimal."""
    k = value * 255.0
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    return f"{value:.4g}"



def duration_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


ROUND_LOG = re.compile(r"round (\d+), surrogate accuracy on perturbed data ([0-9.]+), loss ([0-9.eE+-]+)")


@dataclass
class RoundPoint:
    round: int
    accuracy: float
    loss: float
    at_s: float  # seconds since the run started when the round ended


@dataclass
class ProtectStatus:
    """What the Protect page shows, folded from progress events.

    The time left comes from measured rounds only: (time since the samples were read) / (rounds
    finished) x (rounds still allowed). Before the first round has finished there is no estimate.
    It is an upper bound: the engine stops early once the surrogate reaches the stop accuracy.
    """

    fraction: float = 0.0
    message: str = ""
    round: int | None = None
    accuracy: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    per_series: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    max_rounds: int | None = None
    history: list[RoundPoint] = field(default_factory=list)  # one point per finished round
    rounds_started_s: float | None = None  # when the first round began (the samples were read)
    reading_until_s: float | None = None
    fixed_length: bool = False  # the run has no early stop (class texture): the estimate is not an upper bound

    def update(self, event: Any, series_ids: Sequence[str] = (), now_s: float | None = None) -> None:
        """``now_s``: seconds since the run started (the page's clock); the event's own elapsed time
        when not given."""
        now = event.elapsed_s if now_s is None else now_s
        if event.stage == "log":
            if event.message:
                self.log.append(event.message)
                match = ROUND_LOG.search(event.message)
                if match:
                    self._round_finished(int(match.group(1)), float(match.group(2)), float(match.group(3)), now)
            return
        self.fraction = event.fraction
        self.elapsed_s = now
        if event.message:
            self.message = event.message
        metrics = event.metrics or {}
        if metrics.get("round") is not None:
            self.round = int(metrics["round"])
            if self.round == 0:  # still reading samples: round 1 (its training first) starts after this
                self.reading_until_s, self.rounds_started_s = now, None
            elif self.rounds_started_s is None:
                self.rounds_started_s = self.reading_until_s if self.reading_until_s is not None else now
        for key in ("surrogate_accuracy", "accuracy", "train_accuracy"):
            if metrics.get(key) is not None:
                self.accuracy = float(metrics[key])
                break
        self.eta_s = self._eta(now)
        if metrics.get("epoch") and metrics.get("epochs") and self.reading_until_s is not None:
            # the class texture (2D 8-bit): no rounds, a fixed number of surrogate epochs, so a linear estimate
            per_epoch = (now - self.reading_until_s) / int(metrics["epoch"])
            self.eta_s = max(0.0, per_epoch * (int(metrics["epochs"]) - int(metrics["epoch"])))
            self.fixed_length = True
        if event.message == "done":
            self.eta_s = 0.0
        sid = metrics.get("series") or metrics.get("series_id")
        if sid is not None and "series_fraction" in metrics:
            self.per_series[str(sid)] = float(metrics["series_fraction"])
        elif sid is not None:
            self.per_series[str(sid)] = event.fraction
        elif series_ids:
            for s in series_ids:  # the engine protects all series together: they advance together
                self.per_series[s] = event.fraction

    def _round_finished(self, rnd: int, accuracy: float, loss: float, now: float) -> None:
        self.history = [p for p in self.history if p.round != rnd]
        self.history.append(RoundPoint(rnd, accuracy, loss, now))
        self.eta_s = self._eta(now)

    def seconds_per_round(self) -> float | None:
        if not self.history or self.rounds_started_s is None:
            return None
        last = max(self.history, key=lambda p: p.round)
        spent = last.at_s - self.rounds_started_s
        return spent / last.round if spent > 0 and last.round > 0 else None

    def _eta(self, now: float) -> float | None:
        per_round = self.seconds_per_round()
        if per_round is None or self.max_rounds is None:
            return None
        finished = max(p.round for p in self.history)
        in_round = max(0.0, now - max(p.at_s for p in self.history))
        return max(0.0, per_round * (self.max_rounds - finished) - in_round)

    def eta_text(self) -> str:
        if self.eta_s is None:
            return "measuring the first round…" if self.round else "–"
        if self.eta_s == 0:
            return "0 s"
        if self.fixed_length:
            return f"about {duration_text(self.eta_s)}"
        return f"at most {duration_text(self.eta_s)} (less if the surrogate reaches the stop accuracy sooner)"

    def accuracy_text(self) -> str:
        return "–" if self.accuracy is None else f"{100 * self.accuracy:.1f} %"


def number_with_unit(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def run_summary_lines(summary: dict[str, Any], unit: str = "") -> list[str]:
    """A protection summary in words and units (for the log and the export page), not a key dump."""
    lines: list[str] = []
    if not summary:
        return lines
    method = {"salm": "SALM", "em": "EM", "random": "random noise"}.get(str(summary.get("method")), summary.get("method"))
    if "method" in summary:
        ratio = summary.get("mask_ratio")
        lines.append(f"Method: {method}" + (f", mask ratio {100 * float(ratio):.0f} % of the pixels" if ratio is not None
                                           and summary.get("method") == "salm" else ""))
    if summary.get("epsilon") is not None:
        eps = float(summary["epsilon"])
        native = summary.get("epsilon_native")
        lines.append(f"Budget: ±{epsilon_text(eps)} of the intensity window"
                     + (f" (±{number_with_unit(float(native), unit)})" if native is not None else ""))
    if summary.get("samples") is not None:
        lines.append(f"Images protected: {summary['samples']}" + (f" in {summary['series']} series" if summary.get("series") else ""))
    texts = (("rounds", lambda v: f"Rounds: {v}"),
             ("surrogate_accuracy", lambda v: f"Surrogate accuracy on the protected images: {100 * float(v):.1f} %"),
             ("fraction_pixels_changed", lambda v: f"Pixels changed: {100 * float(v):.1f} %"),
             ("max_abs_change_native", lambda v: f"Largest change of a pixel: {number_with_unit(float(v), unit)}"),
             ("seconds", lambda v: f"Protection time: {duration_text(float(v))}"),
             ("device", lambda v: f"Device: {device_label(str(v))}"))
    lines += [text(summary[key]) for key, text in texts if summary.get(key) is not None]
    return lines


def device_label(device: str) -> str:
    """"cpu" -> "CPU", "cuda:0" -> "CUDA 0", "mps" -> "Apple MPS"."""
    if device == "cpu":
        return "CPU"
    if device == "mps":
        return "Apple MPS"
    if device.startswith("cuda"):
        return "CUDA " + (device.split(":")[1] if ":" in device else "0")
    return device
