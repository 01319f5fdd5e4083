"""The first command on a machine without Qt's window libraries: a message with the fix, not an abort."""

from __future__ import annotations

import subprocess
import sys


from salm_desktop.gui import app


def test_a_missing_xcb_library_is_named_with_the_command_that_installs_it(monkeypatch):
    libraries = [*app.XCB_LIBRARIES, ("libxcb-not-on-this-machine.so.9", "libxcb-not-on-this-machine9")]
    monkeypatch.setattr(app, "XCB_LIBRARIES", libraries)
    assert app.missing_xcb_packages() == ["libxcb-not-on-this-machine9"]  # the real ones are installed here
    problem = app.platform_problem({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"})
    assert "missing system libraries (libxcb-not-on-this-machine9)" in problem
    assert "apt-get install -y libxcb-not-on-this-machine9" in problem.splitlines()[-1]


def test_no_display_is_explained_and_offscreen_needs_nothing():
    assert "no display" in app.platform_problem({"QT_QPA_PLATFORM": "xcb"})
    assert app.platform_problem({"QT_QPA_PLATFORM": "offscreen"}) is None


def test_the_app_prints_the_reason_and_exits_instead_of_aborting(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DISPLAY": ":93731"}  # no X server there
    out = subprocess.run([sys.executable, "-m", "salm_desktop.gui.app"], capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONPATH": str(app.Path(app.__file__).resolve().parents[2])})
    assert out.returncode == 1, out.stderr  # not -6 (SIGABRT) as when Qt aborts
    assert out.stderr.startswith("salm-desktop: cannot connect to the X display ':93731'")
    assert "Traceback" not in out.stderr
