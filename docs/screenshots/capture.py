"""Take the user guide's screenshots from a real window.

Run from the repository root (needs ../shared/data and Xvfb):

    xvfb-run -a -s "-screen 0 1400x900x24" env QT_QPA_PLATFORM=xcb python3 docs/screenshots/capture.py

It drives the wizard through every step on the real abdominal CT study (ct_3slice_dcmqi: 3 slices,
a DICOM SEG that is skipped, three NRRD label maps that are left out), with small engine settings so
that it finishes in a few minutes on a CPU, and writes one PNG per step next to this file.
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
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from salm_desktop.gui.app import wait_until
    from salm_desktop.gui.main_window import MainWindow

    app = QApplication(sys.argv)
    study = DATA / "dicom" / "ct_3slice_dcmqi"
    tmp = Path(tempfile.mkdtemp(prefix="salm-shots-"))
    window = MainWindow(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat), show_dialogs=False)
    window.resize(1360, 860)
    window.show()
    s = window.ctx.settings
    s.device, s.seed, s.max_rounds, s.pgd_steps, s.train_steps, s.batch_size = "auto", 0, 3, 5, 5, 8
    s.mask_ratio, s.label_source, s.n_clusters = 0.2, "auto", 2  # no labels in the study: pseudo-labels
    window.settings_page.show_settings(s)

    def shot(name: str) -> None:
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        path = HERE / f"{name}.png"
        window.grab().save(str(path))
        print(f"wrote {path.relative_to(REPO)}")

    def wait(predicate, what: str, timeout: float = 900) -> None:
        if not wait_until(app, predicate, timeout):
            raise SystemExit(f"capture: {what} did not finish; errors: {window.errors}")

    # 1. load
    window.load_page.add_paths([study])
    wait(lambda: window.ctx.state.load_result is not None and not window.load_page.running, "loading")
    shot("1-load")  # the NRRD label maps are listed apart: they are regions, not images to protect

    # 2. settings, with the advanced section open
    window.go_to(1)
    window.settings_page.advanced.setChecked(True)
    shot("2-settings")
    window.settings_page.advanced.setChecked(False)

    # 3. preview with the mask overlay
    window.go_to(2)
    page = window.preview_page
    wait(lambda: page.current_mask() is not None, "mask preview")
    page.viewer.state.set_frame(1)
    wait(lambda: page.current_mask() is not None, "mask preview")
    page.viewer.state.set_view(1.6, None)
    page.viewer.show_value_at(250, 170)  # as if the mouse rested on the liver
    shot("3-preview")

    # 4. protect
    window.go_to(3)
    window.protect_page.start()
    wait(lambda: window.protect_page.overall.value() > 0, "protection start")
    wait(lambda: not window.protect_page.running, "protection")
    if window.ctx.state.protect_result is None:
        raise SystemExit(f"capture: protection failed: {window.errors}")
    shot("4-protect")

    # 5. review: side by side, then the difference map
    window.go_to(4)
    review = window.review_page
    wait(lambda: bool(review.fidelity), "fidelity")
    review.state.set_frame(1)
    review.left.choose_preset("CT abdomen")
    review.state.set_view(2.2, None)
    review.left.show_value_at(250, 170)
    shot("5-review")
    review.right_mode.setCurrentIndex(1)
    review.right.show_value_at(250, 170)
    shot("5-review-difference")
    review.right_mode.setCurrentIndex(0)

    # 6. export
    window.go_to(5)
    window.export_page.destination.setText(str(tmp / "ct_3slice_protected"))
    window.export_page.start()
    wait(lambda: not window.export_page.running and window.ctx.state.export_result is not None, "export")
    shot("6-export")

    # the batch queue window
    dialog = window.open_batch()
    dialog.resize(1000, 520)
    dialog.add_folder(study / "dicom")
    dialog.add_folder(DATA / "dicom" / "hitachi_shoulder_mr" / "dicom")
    dialog.out_root.setText(str(tmp / "batch"))
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    dialog.grab().save(str(HERE / "7-batch.png"))
    print("wrote docs/screenshots/7-batch.png")
    dialog.close()
    window.shutdown()
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
