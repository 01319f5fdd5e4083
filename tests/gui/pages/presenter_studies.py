"""Helpers of the presenter tests (imported by them and by conftest.py): tiny engine settings, a loaded state."""

from __future__ import annotations

from pathlib import Path

from salm_desktop.gui import services
from salm_desktop.gui.model import WizardSettings, WizardState


def tiny_settings() -> WizardSettings:
    """Engine settings small enough for tests (2 short rounds on the CPU)."""
    s = WizardSettings()
    s.device, s.max_rounds, s.pgd_steps, s.train_steps, s.batch_size, s.seed = "cpu", 2, 3, 3, 32, 0
    return s


def loaded_state(paths: list[Path], settings: WizardSettings | None = None) -> WizardState:
    """A wizard state with ``paths`` loaded the way the Load step does it, every series ticked."""
    state = WizardState(inputs=list(paths))
    state.load_result = services.load(state.inputs, settings or WizardSettings())
    state.excluded = state.default_excluded()
    return state
