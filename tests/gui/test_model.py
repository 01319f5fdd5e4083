"""The wizard's presentation logic, without widgets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from salm_desktop.core.model import IntensityMap, LoadResult, Sample, Series, Skipped, SourceRef, StoredFormat
from salm_desktop.core.progress import ProgressEvent
from salm_desktop.gui import model as m


def _series(sid="abc123", modality="CT", intensity=None, n=3, shape=(4, 4), labels=None, kind="dicom", meta=None):
    samples = [
        Sample(f"s{i}", shape, (lambda i=i: np.full(shape, i, np.float32)), StoredFormat.for_dtype("int16"),
               SourceRef(Path(f"/x/{i}.dcm")), label=None if labels is None else labels[i])
        for i in range(n)
    ]
    return Series(sid, kind, modality, samples, intensity or IntensityMap.for_ct(), Path("/x"), meta=meta or {})


def test_parse_epsilon_accepts_fractions_decimals_and_255ths():
    assert m.parse_epsilon("8/255") == pytest.approx(8 / 255)
    assert m.parse_epsilon("0.05") == pytest.approx(0.05)
    assert m.parse_epsilon("16") == pytest.approx(16 / 255)
    for bad in ("", "abc", "0", "-1/255", "1/0", "300"):
        with pytest.raises(ValueError):
            m.parse_epsilon(bad)
    assert m.epsilon_text(8 / 255) == "8/255"
    assert m.epsilon_text(0.05) == "0.05"


def test_settings_round_trip_and_tolerant_restore():
    s = m.WizardSettings(method="em", epsilon=4 / 255, mask_ratio=0.3, seed=7, foreground=True, label_source="clusters")
    back = m.WizardSettings.from_dict({k: str(v) for k, v in s.to_dict().items()})  # QSettings gives strings
    assert back == s
    broken = m.WizardSettings.from_dict({"method": "magic", "epsilon": "x", "mask_ratio": "5", "seed": "nan?", "zzz": 1})
    assert broken.method == m.WizardSettings().method
    assert broken.epsilon == m.WizardSettings().epsilon and broken.mask_ratio == m.WizardSettings().mask_ratio


def test_wizard_defaults_are_the_engine_defaults():
    from salm_desktop.core.protect import ProtectSettings

    engine, wizard = ProtectSettings(), m.WizardSettings()
    for name in ("method", "epsilon", "pgd_steps", "train_steps", "max_rounds", "foreground", "batch_size"):
        assert getattr(wizard, name) == getattr(engine, name), name
    assert wizard.mask_ratio == 0 and engine.mask_ratio is None  # both "auto": each variant's own ratio
    assert m.build_protect_settings(wizard).mask_ratio is None


def test_build_protect_settings_maps_labels_and_em():
    s = m.WizardSettings(method="em", mask_ratio=0.1, label_source="clusters", n_clusters=3, seed=5, device="cpu")
    ps = m.build_protect_settings(s)
    assert (ps.method, ps.effective_mask_ratio, ps.labels, ps.n_clusters, ps.seed, ps.device) == ("em", 1.0, "clusters", 3, 5, "cpu")
    assert m.WizardSettings(label_source="clusters").loader_labels() == "none"
    assert m.WizardSettings(label_source="clusters").study_labels() is None  # shown on the Load page, not used
    assert m.WizardSettings(label_source="auto").loader_labels() is None
    assert m.WizardSettings(label_source="csv", csv_path="/a/b.csv").loader_labels() == "csv:/a/b.csv"


def test_wizard_settings_reach_every_option_of_the_schema():
    from salm_desktop.core.option_schema import OPTIONS

    s = m.WizardSettings(**{key: "1" if key in ("extra_rounds",) else "" for key in m.ADVANCED_OPTIONS})
    assert set(s.options()) | set(m.ADVANCED_OPTIONS) == set(OPTIONS)
    s = m.WizardSettings(mask_scope="sample", robust="pgd", stop_loss="0.1", epsilon_native=12.0, epsilon_unit="HU")
    ps = m.build_protect_settings(s)
    assert (ps.mask_scope, ps.robust, ps.stop_loss, ps.epsilon_native, ps.epsilon_unit) == ("sample", "pgd", 0.1, 12.0, "HU")
    assert m.option_error("robust", "maybe") and not m.option_error("robust", "full") and not m.option_error("init", "")
    restored = m.WizardSettings.from_dict({**s.to_dict(), "robust": "maybe"})  # a bad stored value falls back
    assert restored.robust == "" and restored.mask_scope == "sample"


def test_series_and_skipped_rows():
    s = _series(labels=[0, 1, 1], meta={"dims": (3, 1)})
    s.warnings.append("uneven spacing")
    rows = m.series_rows(LoadResult([s], [Skipped(Path("/x/seg.dcm"), "DICOM SEG is not an image series")]))
    assert rows == [["abc123", "dicom", "CT", "", "3", "4×4  (3 × 1)", "0: 1, 1: 2", "uneven spacing"]]
    assert m.skipped_rows(LoadResult([], [Skipped(Path("/x/seg.dcm"), "why")])) == [["/x/seg.dcm", "why"]]
    assert m.load_summary(LoadResult([s], [Skipped(Path("a"), "b")])) == "1 series, 3 images, 1 skipped (see below)"


def test_budget_in_normalized_and_native_units():
    ct = _series("ct0001", "CT", IntensityMap(-1000.0, 1000.0, "HU"))  # a 2000 HU window (for_ct() is W400 now)
    mr = _series("mr0001", "MR", IntensityMap(100.0, 1100.0))
    normalized, native = m.budget_texts(8 / 255, [ct, mr])
    assert "0.0314" in normalized and "8/255" in normalized
    assert "±62.7 HU" in native  # 8/255 of a 2000 HU window
    assert "±31.4 (MR" in native  # 8/255 of a 1000-unit window


def test_protect_status_folds_progress_events():
    st = m.ProtectStatus(max_rounds=10)
    st.update(ProgressEvent("protect", 5, 20, "batch", {"round": 2, "surrogate_accuracy": 0.875}, 10.0, 30.0), ["a", "b"])
    st.update(ProgressEvent("log", 0, 0, "round 2 done"))
    assert st.fraction == 0.25 and st.round == 2 and st.accuracy_text() == "87.5 %"
    assert st.per_series == {"a": 0.25, "b": 0.25} and st.log == ["round 2 done"]
    assert m.duration_text(30.0) == "30 s" and m.duration_text(125) == "2 min 05 s" and m.duration_text(None) == "–"


def test_time_left_comes_from_measured_rounds_only():
    st = m.ProtectStatus(max_rounds=10)
    st.update(ProgressEvent("protect", 1, 100, "reading samples", {"round": 0}, 1.0, 99.0), now_s=1.0)
    st.update(ProgressEvent("protect", 12, 100, "round 1: perturbing", {"round": 1}, 2.0, 5.0), now_s=2.0)
    # the core's own linear guess (5 s) is not shown: no round has been measured yet
    assert st.eta_s is None and st.eta_text() == "measuring the first round…"
    st.update(ProgressEvent("log", 0, 0, "2D group: round 1, surrogate accuracy on perturbed data 0.600, loss 0.6931"),
              now_s=6.0)
    assert st.seconds_per_round() == pytest.approx(5.0)  # round 1 (training, then perturbing) ran from 1 s to 6 s
    assert st.eta_s == pytest.approx(45.0)  # 9 rounds left at 5 s each, an upper bound
    assert st.eta_text().startswith("at most 45 s")
    st.update(ProgressEvent("log", 0, 0, "2D group: round 2, surrogate accuracy on perturbed data 0.950, loss 0.2000"),
              now_s=12.0)
    assert st.seconds_per_round() == pytest.approx(5.5) and st.eta_s == pytest.approx(44.0)
    assert [(p.round, p.accuracy, p.loss) for p in st.history] == [(1, 0.6, 0.6931), (2, 0.95, 0.2)]
    st.update(ProgressEvent("protect", 100, 100, "done", {"round": 2}, 13.0, None), now_s=13.0)
    assert st.eta_s == 0.0


def test_run_summary_is_words_and_units():
    lines = m.run_summary_lines({"method": "salm", "mask_ratio": 0.2, "epsilon": 8 / 255, "epsilon_native": 62.75,
                                 "samples": 3, "series": 1, "rounds": 2, "surrogate_accuracy": 0.5,
                                 "fraction_pixels_changed": 0.197, "max_abs_change_native": 12.0,
                                 "seconds": 31.2, "device": "cpu"}, "HU")
    assert "Method: SALM, mask ratio 20 % of the pixels" in lines
    assert "Budget: ±8/255 of the intensity window (±62.75 HU)" in lines
    assert "Largest change of a pixel: 12 HU" in lines and "Device: CPU" in lines
    assert "Pixels changed: 19.7 %" in lines and "Protection time: 31 s" in lines
    assert not any("_" in line for line in lines)  # no raw key names


def test_labels_summary_warns_when_the_setting_does_not_fit():
    labelled = _series("ab12", labels=[0, 1, 1])
    unlabelled = _series("cd34")
    auto = m.WizardSettings(label_source="auto")
    text, warning = m.labels_summary(auto, [unlabelled])
    assert "pseudo-labels" in text and "no labels of its own" in text and warning == ""
    assert m.effective_label_mode(auto, [unlabelled]) == "clusters"
    assert m.for_run(auto, [unlabelled]).label_source == "clusters"
    assert m.for_run(auto, [labelled]).label_source == "auto"
    text, warning = m.labels_summary(auto, [labelled])
    assert "own (2 classes: 0, 1" in text and warning == ""
    text, warning = m.labels_summary(m.WizardSettings(label_source="clusters"), [labelled])
    assert "pseudo-labels" in text and "has its own labels" in warning
    _, warning = m.labels_summary(m.WizardSettings(label_source="npz"), [unlabelled])
    assert "cd34" in warning


def test_auto_device_is_resolved_to_what_runs():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert m.resolved_device("auto") == expected
    assert m.for_run(m.WizardSettings(device="auto"), []).device == expected
    assert m.device_choices()[0][1] == f"Automatic (here: {m.device_text('auto')})"
    if expected == "cpu":
        assert m.device_text("auto") == "CPU"


def test_fidelity_rows_show_the_core_numbers_in_units():
    numbers = {"psnr_db": 46.0, "max_abs_change_native": 10.0, "mean_abs_change_native": 0.5, "fraction_changed": 0.05}
    rows = m.fidelity_rows({"abc": numbers}, {"abc": "HU"})
    assert rows[0][1] == "46.0 dB" and rows[0][3] == "10 HU" and rows[0][5] == "5.0 %"


def test_state_selection_and_npz_splits():
    train = _series("tr", kind="npz", meta={"split": "train"})
    test = _series("te", kind="npz", meta={"split": "test"})
    ct = _series("ct")
    state = m.WizardState(load_result=LoadResult([train, test, ct]))
    state.excluded = state.default_excluded()
    assert state.excluded == {"te"}
    assert [s.id for s in state.selected_series] == ["tr", "ct"]
    assert state.selected_splits() == ("train",)
    state.excluded.add("ct")
    assert [s.id for s in state.export_load_result().series] == ["tr", "te"]  # npz splits always travel


def test_default_output_dir_is_outside_the_input_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    study = tmp_path / "data" / "ct_study" / "dicom"
    study.mkdir(parents=True)
    out = tmp_path / "home" / "salm-out"
    assert m.default_output_dir([study]) == out / "dicom_protected"
    # a remembered output folder is used, unless it lies inside the study's tree
    assert m.default_output_dir([study], tmp_path / "exports") == tmp_path / "exports" / "dicom_protected"
    assert m.default_output_dir([study], tmp_path / "data" / "ct_study") == out / "dicom_protected"
    f = tmp_path / "data.npz"
    f.write_bytes(b"")
    assert m.default_output_dir([f], tmp_path / "exports") == tmp_path / "exports" / "data_protected"
    (out / "dicom_protected").mkdir(parents=True)
    (out / "dicom_protected" / "x").write_text("taken")
    assert m.default_output_dir([study]) == out / "dicom_protected_2"
    assert m.default_output_dir([]) is None


def test_device_list_names_the_cuda_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    choices = m.device_choices()
    assert choices[0][0] == "auto" and ("cpu", "CPU") in choices
    assert ("cuda:0", "CUDA 0: NVIDIA H200") in choices
