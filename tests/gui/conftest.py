"""GUI test fixtures: a temporary QSettings file per test, a wizard window, tiny engine settings."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")


@pytest.fixture(scope="session", autouse=True)
def _no_real_user_settings(tmp_path_factory):
    """Any QSettings built without a file (the app's default) lands in a temporary folder, not in the
    user's ~/.config: tests never read or leak real settings."""
    from PySide6.QtCore import QSettings

    folder = tmp_path_factory.mktemp("qsettings-user-scope")
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(folder))
    return folder


@pytest.fixture
def qsettings(tmp_path: Path, qapp):
    from PySide6.QtCore import QSettings

    # a file of its own: nothing leaks into the user's real settings, nor between tests
    return QSettings(str(tmp_path / "salm-desktop-test.ini"), QSettings.Format.IniFormat)


def tiny(settings) -> None:
    """Engine settings small enough for tests (few rounds and steps, CPU)."""
    settings.device = "cpu"
    settings.max_rounds = 2
    settings.pgd_steps = 3
    settings.train_steps = 3
    settings.batch_size = 32
    settings.seed = 0


@pytest.fixture
def window(qtbot, qsettings):
    from salm_desktop.gui.main_window import MainWindow

    w = MainWindow(qsettings, show_dialogs=False)
    tiny(w.ctx.settings)
    w.settings_page.show_settings(w.ctx.settings)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.shutdown()


class Driver:
    """Small helpers to drive the wizard from tests."""

    def __init__(self, qtbot) -> None:
        self.qtbot = qtbot

    def wait_for(self, predicate, timeout_s: float = 60.0) -> None:
        self.qtbot.waitUntil(predicate, timeout=int(timeout_s * 1000))

    def load(self, window, paths, timeout_s: float = 60.0) -> None:
        window.ctx.state.load_result = None
        window.load_page.add_paths([Path(p) for p in paths])
        self.wait_for(lambda: not window.load_page.running and window.ctx.state.load_result is not None, timeout_s)


@pytest.fixture
def drive(qtbot) -> Driver:
    return Driver(qtbot)
