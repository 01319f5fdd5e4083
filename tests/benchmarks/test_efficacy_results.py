"""The efficacy grid's results survive a lost cache (issue 12): every small result JSON is written to the
committed results folder too, and the report is rebuilt from that folder without any protected array."""

from __future__ import annotations

import json

import pytest


@pytest.fixture()
def grid(tmp_path, monkeypatch, load_benchmark):
    mod = load_benchmark("efficacy.py")
    monkeypatch.setattr(mod, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")
    return mod


def _run(rp: float, bal: float) -> dict:
    view = {"rank_power": rp, "balanced_acc": bal, "auc": rp, "acc": bal, "epoch": 3}
    return {"final": dict(view), "val_selected": dict(view), "history": [{"rank_power": 0.6}], "seconds": 1.0}


def test_results_written_to_both_and_report_needs_no_cache(grid, tmp_path):
    recipe = grid.default_suite(20)[0]
    grid.write_result("breastmnist", grid._run_name("salm-tex", 0, recipe), _run(0.61, 0.5))
    grid.write_result("breastmnist", "salm-tex-p0.json", {"seconds": 3.0, "psnr": 37.0, "ssim": 0.98})
    assert (tmp_path / "cache" / "breastmnist" / "salm-tex-p0.json").exists()
    assert (tmp_path / "results" / "breastmnist" / "salm-tex-p0.json").exists()
    for f in (tmp_path / "cache" / "breastmnist").iterdir():  # the machine (and its cache) is lost
        f.unlink()
    out = grid.collect(["breastmnist"], ["salm-tex"], [0], [recipe])
    entry = out["breastmnist"]["salm-tex"]
    assert entry["meta"][0]["psnr"] == 37.0
    assert entry["thieves"][recipe.name]["final"]["rank_power"]["mean"] == pytest.approx(0.61)
    assert "0.61" in grid.markdown(out, [recipe], [0], "header")


def test_cache_only_result_is_mirrored_into_the_results_folder(grid, tmp_path):
    recipe = grid.default_suite(20)[0]
    name = grid._run_name("em", 1, recipe)
    (tmp_path / "cache" / "pneumoniamnist").mkdir(parents=True)
    (tmp_path / "cache" / "pneumoniamnist" / name).write_text(json.dumps(_run(0.8, 0.6)))
    assert grid.read_result("pneumoniamnist", name)["final"]["rank_power"] == 0.8
    assert json.loads((tmp_path / "results" / "pneumoniamnist" / name).read_text())["final"]["rank_power"] == 0.8
    assert grid.read_result("pneumoniamnist", "missing.json") is None


def test_finished_thief_run_does_not_build_the_protected_split(grid):
    recipe = grid.default_suite(20)[0]
    grid.write_result("breastmnist", grid._run_name("ar", 2, recipe), _run(0.7, 0.55))

    def boom():
        raise AssertionError("protected split built although the run is done")

    assert grid.thief_run("breastmnist", "ar", 2, recipe, boom, {}, print)["final"]["rank_power"] == 0.7


def test_a_rerun_elsewhere_draws_its_own_figure_not_the_docs_one(grid, tmp_path):
    committed = grid.REPO / "benchmarks" / "results_efficacy"
    assert grid.default_figure_path(committed) == grid.REPO / "docs" / "efficacy_grid.png"
    assert grid.default_figure_path(tmp_path / "rerun") == tmp_path / "rerun" / "efficacy_grid.png"
