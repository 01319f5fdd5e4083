"""Progress: events to listeners, cancellation at every update, log lines, a log-only child."""

from __future__ import annotations

import pytest

from salm_desktop.core.progress import Cancelled, Progress, ProgressEvent, null_progress


def test_updates_reach_every_listener_with_fraction_and_eta():
    first, second = [], []
    progress = Progress(first.append)
    progress.add_listener(second.append)
    progress.update("load", 0, 4, "finding files")
    progress.update("load", 1, 4, "read 1 of 4", round=1)
    progress.update("load", 4, 4, "done")
    assert first == second and [e.done for e in first] == [0, 1, 4]
    start, mid, end = first
    assert isinstance(mid, ProgressEvent) and mid.stage == "load" and mid.message == "read 1 of 4"
    assert mid.metrics == {"round": 1} and mid.fraction == 0.25 and end.fraction == 1.0
    assert start.eta_s is None and end.eta_s is None  # nothing done yet / nothing left: no guess
    assert mid.elapsed_s >= start.elapsed_s >= 0.0
    if mid.elapsed_s > 0:
        assert mid.eta_s == pytest.approx(mid.elapsed_s / 1 * 3)
    assert ProgressEvent("x", 5, 0).fraction == 0.0 and ProgressEvent("x", 9, 4).fraction == 1.0


def test_cancel_raises_at_the_next_update_after_listeners_saw_it():
    seen = []
    progress = Progress(seen.append)
    progress.update("protect", 1, 10)
    assert not progress.cancelled
    progress.cancel()
    assert progress.cancelled
    with pytest.raises(Cancelled, match="cancelled by the user"):
        progress.update("protect", 2, 10)
    assert [e.done for e in seen] == [1, 2]
    with pytest.raises(Cancelled):
        progress.check()
    null_progress().check()  # a fresh one never raises


def test_log_lines_are_kept_and_sent_as_log_events():
    seen = []
    progress = Progress(seen.append)
    progress.log("wrote 4 files")
    assert progress.messages == ["wrote 4 files"]
    assert [(e.stage, e.message) for e in seen] == [("log", "wrote 4 files")]


def test_log_only_child_forwards_log_lines_but_not_its_stage_and_cancels_alone():
    seen = []
    parent = Progress(seen.append)
    child = parent.log_only()
    child.update("write", 1, 2, "writing")
    child.log("unit 1 written")
    assert [(e.stage, e.message) for e in seen] == [("log", "unit 1 written")]
    assert parent.messages == ["unit 1 written"]
    parent.cancel()
    child.update("write", 2, 2)  # the background writer finishes its unit
    child.cancel()
    with pytest.raises(Cancelled):
        child.check()


def test_restart_stage_counts_elapsed_time_from_the_restart():
    seen = []
    progress = Progress(seen.append)
    progress.update("protect", 1, 3)
    progress.restart_stage("protect")
    progress.update("protect", 0, 3)
    progress.update("other", 0, 1)
    assert seen[1].elapsed_s == 0.0 and seen[2].elapsed_s == 0.0  # first update of a (re)started stage
