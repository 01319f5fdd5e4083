"""Take the export step's screenshot with the de-identification preview (issue 15 item 5).

Run from the repository root (needs ../shared/data and Xvfb):

    xvfb-run -a -s "-screen 0 1400x1000x24" env QT_QPA_PLATFORM=xcb python3 docs/screenshots/capture_deid.py

It loads the real abdominal CT study (ct_3slice_dcmqi), protects it with random noise (seconds on a
CPU; the export step only needs a protection result), opens step 6, fills in operator and purpose,
ticks one option and writes 6-export-deid.png next to this file. Nothing is exported.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = Path(os.environ.get("SALM_TEST_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="salm-shots-"))
    os.environ.setdefault("SALM_DESKTOP_CONFIG_DIR", str(tmp / "config"))  # a throw-away pseudonym secret
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from salm_desktop.gui.app import wait_until
    from salm_desktop.gui.main_window import MainWindow

    app = QApplication(sys.argv)
    study = DATA / "dicom" / "ct_3slice_dcmqi"
    window = MainWindow(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat), show_dialogs=False)
    window.resize(1360, 980)
    window.show()
    s = window.ctx.settings
    s.device, s.seed, s.method, s.label_source = "cpu", 0, "random", "auto"
    window.settings_page.show_settings(s)

    def wait(predicate, what: str, timeout: float = 600) -> None:
        if not wait_until(app, predicate, timeout):
            raise SystemExit(f"capture: {what} did not finish; errors: {window.errors}")

    window.load_page.add_paths([study])
    wait(lambda: window.ctx.state.load_result is not None and not window.load_page.running, "loading")
    window.go_to(3)
    window.protect_page.start()
    wait(lambda: not window.protect_page.running and window.ctx.state.protect_result is not None, "protection")
    window.go_to(5)
    page = window.export_page
    page.destination.setText(str(Path.home() / "exports" / "ct_3slice_protected"))
    page.deid.operator.setText("A. Steward (imaging data office)")
    page.deid.purpose.setText("Liver segmentation research with University X, agreement 2026-17")
    page.deid.boxes["retain_patient_characteristics"].setChecked(True)
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    path = HERE / "6-export-deid.png"
    window.grab().save(str(path))
    print(f"wrote {path.relative_to(REPO)}")
    window.shutdown()
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
