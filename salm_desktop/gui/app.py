"""salm-desktop entry point: the wizard, or ``--selftest`` (off-screen, tiny run on bundled data)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from importlib.resources import files
from pathlib import Path
from typing import Callable, Sequence

# The top-level resources/ folder is installed as the package salm_desktop.resources (pyproject.toml);
# the PyInstaller spec copies its files to salm_desktop/resources inside the bundle.
if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
    SAMPLE_NPZ = Path(sys._MEIPASS) / "salm_desktop" / "resources" / "breastmnist_sample16.npz"
else:
    SAMPLE_NPZ = Path(str(files("salm_desktop.resources") / "breastmnist_sample16.npz"))

log = logging.getLogger("salm_desktop.gui")


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="salm-desktop", description="SALM Desktop: the protection wizard.")
    parser.add_argument("--selftest", action="store_true",
                        help="start off-screen, protect the bundled sample data, exit 0 on success")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("paths", nargs="*", help="files or folders to load at start")
    return parser.parse_known_args(list(argv))


def wait_until(app, predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    app.processEvents()
    return predicate()


def selftest(app, timeout_s: float = 240.0) -> int:
    """Drive the wizard off-screen: load the bundled sample, protect, review, export; 0 on success."""
    from PySide6.QtCore import QSettings

    from .main_window import MainWindow

    def fail(message: str) -> int:
        print(f"salm-desktop --selftest: FAILED: {message}", file=sys.stderr)
        return 1

    if not SAMPLE_NPZ.exists():
        return fail(f"{SAMPLE_NPZ}: bundled sample data is missing")
    started = time.monotonic()
    phases: list[str] = []
    mark = [started]

    def phase(name: str) -> None:
        now = time.monotonic()
        phases.append(f"{name} {now - mark[0]:.1f} s")
        mark[0] = now

    with tempfile.TemporaryDirectory(prefix="salm-selftest-") as tmp:
        tmp_path = Path(tmp)
        qsettings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(qsettings, show_dialogs=False)
        try:
            s = window.ctx.settings
            s.method, s.mask_ratio, s.device, s.seed = "salm", 0.2, "cpu", 0
            s.max_rounds, s.pgd_steps, s.train_steps, s.batch_size = 1, 3, 2, 16
            s.label_source, s.report, s.output_format = "auto", True, "auto"
            window.settings_page.show_settings(s)
            window.show()
            phase("start")
            window.load_page.add_paths([SAMPLE_NPZ])
            if not wait_until(app, lambda: window.ctx.state.load_result is not None and not window.load_page.running, timeout_s):
                return fail("loading the sample data did not finish")
            if window.errors:
                return fail("; ".join(f"{t}: {m}" for t, m in window.errors))
            series = window.ctx.state.selected_series
            if not series or sum(len(x.samples) for x in series) != 16:
                return fail(f"expected 16 sample images, found {sum(len(x.samples) for x in series)}")
            phase("load")
            window.go_to(2)
            if not wait_until(app, lambda: window.preview_page.current_mask() is not None, 60):
                return fail("the mask preview did not appear")
            phase("preview")
            window.go_to(3)
            window.protect_page.start()
            if not wait_until(app, lambda: not window.protect_page.running and window.ctx.state.protect_result is not None,
                              timeout_s):
                return fail("protection did not finish" + (f": {window.errors[-1][1]}" if window.errors else ""))
            phase("protect")
            window.go_to(4)
            if not wait_until(app, lambda: bool(window.review_page.fidelity), 60):
                return fail("fidelity numbers did not appear")
            numbers = next(iter(window.review_page.fidelity.values()))
            if not (0 < numbers["fraction_changed"] <= 1) or numbers["max_abs_change_native"] > 8.5:
                return fail(f"implausible protection: {numbers}")
            phase("review")
            window.go_to(5)
            out_dir = tmp_path / "protected"
            window.export_page.destination.setText(str(out_dir))
            window.export_page.start()
            if not wait_until(app, lambda: not window.export_page.running and bool(window.export_page.paths), timeout_s):
                return fail("export did not finish" + (f": {window.errors[-1][1]}" if window.errors else ""))
            phase("export")
            written = [p for p in out_dir.rglob("*") if p.is_file()]
            if not any(p.suffix == ".npz" for p in written):
                return fail(f"no protected npz written in {out_dir}")
            if window.export_page.paths.get("manifest") is None:
                return fail("no manifest written")
        finally:
            window.shutdown()
            window.close()
    print(f"salm-desktop --selftest: OK on {app.platformName()} ({time.monotonic() - started:.1f} s: {', '.join(phases)})")
    return 0


# Qt's xcb platform plugin loads these system libraries; a fresh Debian/Ubuntu machine often lacks
# some of them, and Qt then aborts the process. (shared object, Debian/Ubuntu package)
XCB_LIBRARIES = [
    ("libxcb-cursor.so.0", "libxcb-cursor0"), ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"), ("libxcb-image.so.0", "libxcb-image0"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"), ("libxcb-randr.so.0", "libxcb-randr0"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"), ("libxcb-shape.so.0", "libxcb-shape0"),
    ("libxcb-xinerama.so.0", "libxcb-xinerama0"), ("libxcb-xkb.so.1", "libxcb-xkb1"),
    ("libEGL.so.1", "libegl1"), ("libGL.so.1", "libgl1"),
]


def missing_xcb_packages() -> list[str]:
    """The Debian/Ubuntu packages whose libraries the dynamic loader cannot find (xcb plugin needs)."""
    import ctypes

    missing = []
    for soname, package in XCB_LIBRARIES:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(package)
    return missing


def install_command(packages: Sequence[str]) -> str:
    sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y {' '.join(packages)}"


def platform_problem(env: dict[str, str] | None = None) -> str | None:
    """Why Qt could not open a window here, with the command that fixes it; None when it can.

    Qt aborts the whole process (no exception) when no platform plugin loads, so the check runs
    before the QApplication exists: the libraries first, then a probe in a child process.
    """
    env = dict(os.environ if env is None else env)
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0]
    if not sys.platform.startswith("linux") or platform in ("offscreen", "minimal", "vnc", "eglfs", "linuxfb"):
        return None
    wayland = platform == "" and bool(env.get("WAYLAND_DISPLAY"))
    if platform in ("", "xcb") and not wayland:
        if not env.get("DISPLAY"):
            return ("no display: there is no X server to open the window on (DISPLAY is not set). Start the app "
                    "from a desktop session, or check the installation without one: salm-desktop --selftest")
        missing = missing_xcb_packages()
        if missing:
            fix = install_command(missing) if _has_apt() else f"install the system packages {', '.join(missing)}"
            return ("Qt's xcb platform plugin cannot load: missing system libraries "
                    f"({', '.join(missing)}). Fix it with:\n    {fix}")
    if getattr(sys, "frozen", False):
        return None  # a bundle cannot run "python -c"; it ships its own Qt libraries
    import subprocess

    probe = "from PySide6.QtGui import QGuiApplication; QGuiApplication(['salm-desktop-probe'])"
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None  # the probe itself could not run: let Qt try (and report) on its own
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    reason = next((line for line in lines if "qt.qpa" in line or "platform plugin" in line), lines[-1] if lines else "")
    if "could not connect to display" in done.stderr:
        return (f"cannot connect to the X display {env.get('DISPLAY', '')!r}: start the app from the desktop "
                "session that owns it, or check the installation without one: salm-desktop --selftest")
    return (f"Qt cannot open a window here ({reason.strip()}). On Debian/Ubuntu this fixes it:\n    "
            f"{install_command([p for _, p in XCB_LIBRARIES])}")


def _has_apt() -> bool:
    import shutil

    return shutil.which("apt-get") is not None


def _install_excepthook() -> None:
    """Unexpected errors become a one-line dialog; the traceback goes to a log file, not the user."""
    log_path = Path(tempfile.gettempdir()) / "salm-desktop-errors.log"

    def hook(exc_type, exc, tb) -> None:
        try:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(time.strftime("%Y-%m-%d %H:%M:%S ") + "".join(traceback.format_exception(exc_type, exc, tb)))
        except OSError:
            pass
        try:
            from PySide6.QtWidgets import QApplication, QMessageBox

            from .workers_text import one_line

            if QApplication.instance() is not None:
                QMessageBox.warning(None, "SALM Desktop", f"Something went wrong: {one_line(exc)}\n"
                                                           f"(details in {log_path})")
        except Exception:
            print(f"salm-desktop: error: {exc}", file=sys.stderr)

    sys.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    args, qt_args = _parse(sys.argv[1:] if argv is None else argv)
    if args.version:
        from salm_desktop import __version__

        print(f"salm-desktop {__version__}")
        return 0
    if args.selftest:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    problem = platform_problem()
    if problem is not None:
        print(f"salm-desktop: {problem}", file=sys.stderr)
        return 1
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["salm-desktop", *qt_args])
    app.setOrganizationName("SALM Desktop")
    app.setApplicationName("salm-desktop")
    if args.selftest:
        try:
            return selftest(app)
        except Exception as exc:  # the selftest reports, it never shows a traceback
            from .workers_text import one_line

            print(f"salm-desktop --selftest: FAILED: {one_line(exc)}", file=sys.stderr)
            return 1

    from .main_window import MainWindow

    _install_excepthook()
    window = MainWindow()
    window.show()
    if args.paths:
        window.load_page.add_paths([Path(p) for p in args.paths])
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
