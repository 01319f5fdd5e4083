"""The per-epoch reading of the efficacy grid (benchmarks/efficacy_epochs.py, issue 12): the figures it prints
are the means and swings of the runs' histories, and a method's runs are its own (``em`` is not ``em-class``)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture()
def epochs(tmp_path, monkeypatch, load_benchmark):
    mod = load_benchmark("efficacy_epochs.py")
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    return mod


def _run(curve: list[float], chosen: int) -> dict:
    return {"history": [{"epoch": i + 1, "rank_power": v} for i, v in enumerate(curve)],
            "final": {"rank_power": curve[-1]}, "val_selected": {"rank_power": curve[chosen - 1], "epoch": chosen}}


def test_summary_is_the_mean_level_and_swing_of_each_half(epochs):
    swinging = [0.9, 0.5] * 5 + [0.6] * 10  # swings 0.4 while the learning rate is high, flat afterwards
    steady = [0.7] * 20
    s = epochs.epoch_summary([_run(swinging, 1), _run(steady, 20)])
    assert s["seeds"] == 2 and s["chosen_epochs"] == [1, 20]
    assert s["mean_early"] == pytest.approx((0.7 + 0.7) / 2) and s["mean_late"] == pytest.approx((0.6 + 0.7) / 2)
    assert s["swing_early"] == pytest.approx(0.4 / 2) and s["swing_late"] == pytest.approx(0.0)
    assert s["final"] == pytest.approx(0.65) and s["chosen"] == pytest.approx(0.8)


def test_runs_of_one_method_only_and_the_table_and_figure(epochs, tmp_path):
    folder = tmp_path / "pneumoniamnist"
    folder.mkdir()
    for method, level in (("em", 0.8), ("em-class", 0.6)):
        for seed in (0, 1):
            name = f"{method}-p{seed}-cnn-sgd-aug-20ep-a{seed}.json"
            (folder / name).write_text(json.dumps(_run([level] * 20, 3)))
    (folder / "em-p0.json").write_text("{}")  # the protected split's own meta, not a thief run
    assert [r["final"]["rank_power"] for r in epochs.runs("pneumoniamnist", "em", "cnn-sgd-aug-20ep")] == [0.8, 0.8]
    table = epochs.table("pneumoniamnist", ["em", "em-class", "ops"])
    assert "| em | cnn-sgd-aug-20ep | 2 | 3, 3 | 0.80 / 0.80 |" in table
    assert "| em-class | cnn-sgd-aug-20ep | 2 |" in table and "ops" not in table  # no runs, no row
    png = tmp_path / "epochs.png"
    epochs.figure("pneumoniamnist", ["em", "em-class"], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
