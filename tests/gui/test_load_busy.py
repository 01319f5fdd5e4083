"""The load page's own busy mark never blocks the next load, however the queued signals interleave."""

from __future__ import annotations


def test_a_load_started_from_the_last_loads_result_still_runs_and_ends(qtbot, window, dicom_dir):
    # A worker's result arrives before its thread's `finished` signal (both queued): a load started from
    # the result handler used to see the page's own busy mark as "another step is working" and never ended.
    page = window.load_page
    outcomes: list[bool] = []

    def load_again_once(ok: bool) -> None:
        outcomes.append(ok)
        if len(outcomes) == 1:
            page.start_load()

    page.finished.connect(load_again_once)
    page.add_paths([dicom_dir / "hitachi_shoulder_mr" / "dicom"])
    qtbot.waitUntil(lambda: len(outcomes) == 2, timeout=60_000)
    assert outcomes == [True, True]
    qtbot.waitUntil(lambda: not window.ctx.busy, timeout=10_000)
    assert page.load_button.isEnabled()
    assert len(window.ctx.state.series) == 1


def test_another_step_holding_a_busy_mark_blocks_a_load_with_a_message(qtbot, window, dicom_dir):
    page = window.load_page
    window.ctx.set_busy(True, "protect")
    try:
        page.add_paths([dicom_dir / "hitachi_shoulder_mr" / "dicom"])
        assert not page.running
        assert "Another step is working" in page.status.text()
    finally:
        window.ctx.set_busy(False, "protect")
    assert not window.ctx.busy
