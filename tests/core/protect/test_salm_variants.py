"""Which SALM variant runs where: ``method="salm"`` lays the class texture on 2D 8-bit images and runs
min-min on everything else (CT, MR, other windows, 3D), each with its own default mask ratio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from salm_desktop.core.evaluate import medmnist_series, series_from_arrays
from salm_desktop.core.model import IntensityMap, StoredFormat
from salm_desktop.core.option_schema import OptionError
from salm_desktop.core.options import build_settings
from salm_desktop.core.pipeline import derivation_text
from salm_desktop.core.progress import Progress
from salm_desktop.core.protect import ProtectSettings, default_mask_ratio, protect_series, uses_class_texture

torch.set_num_threads(1)
FAST = dict(max_rounds=1, pgd_steps=3, train_steps=2, batch_size=32, seed=1)


@pytest.fixture(scope="module")
def breast(medmnist_dir: Path):
    return medmnist_series(medmnist_dir / "breastmnist.npz", "train", n=64)


@pytest.fixture(scope="module")
def volumes(medmnist_dir: Path):
    with np.load(medmnist_dir / "adrenalmnist3d.npz") as z:
        return series_from_arrays(z["train_images"][:4], z["train_labels"][:4], name="adrenal")


def _all(result, series):
    return np.stack([result.protected(series.id, i) for i in range(len(series.samples))])


def test_salm_on_2d_8bit_images_is_the_class_texture_with_a_30_percent_mask(breast):
    default = protect_series([breast], ProtectSettings(**FAST))
    texture = protect_series([breast], ProtectSettings(method="salm-tex", mask_ratio=0.3, **FAST))
    assert np.array_equal(_all(default, breast), _all(texture, breast))  # the grid's salm-tex:mask_ratio=0.3, bit for bit
    s = default.summary
    assert s["variant"] == "class texture" and s["mask_ratio"] == 0.3 and s["rounds"] == 0
    assert s["mask_ratio_per_series"] == {breast.id: 0.3} and default.mask_ratio(breast.id) == 0.3
    changed = (_all(default, breast) != np.stack([x.read() for x in breast.samples])).reshape(len(breast.samples), -1)
    assert changed.mean(1).max() <= round(0.3 * 784) / 784 + 1e-9 and changed.mean() > 0.25


def test_a_set_mask_ratio_applies_to_the_texture(breast):
    r = protect_series([breast], ProtectSettings(mask_ratio=0.1, **FAST))
    assert r.summary["variant"] == "class texture" and r.summary["mask_ratio"] == 0.1
    changed = (_all(r, breast) != np.stack([x.read() for x in breast.samples])).reshape(len(breast.samples), -1)
    assert changed.mean(1).max() <= round(0.1 * 784) / 784 + 1e-9



def test_the_mask_scope_option_reaches_the_texture(breast):
    """A user's mask_scope is not silently ignored on 8-bit images: "sample" gives each image its own mask, the
    class scopes one mask per class, and the grid's salm-tex row takes the same option (bit for bit)."""
    clean = np.stack([x.read() for x in breast.samples])
    labels = np.array([x.label for x in breast.samples])
    members = np.flatnonzero(labels == labels[0])

    def shared(result) -> float:  # how much of each class member's changed-pixel map equals the first member's
        changed = _all(result, breast) != clean
        return float(np.mean([(changed[i] == changed[members[0]]).mean() for i in members[1:]]))

    sample = protect_series([breast], ProtectSettings(mask_scope="sample", **FAST))
    assert shared(protect_series([breast], ProtectSettings(mask_scope="class_from_start", **FAST))) > 0.95
    assert shared(protect_series([breast], ProtectSettings(**FAST))) > 0.95
    assert shared(sample) < 0.9
    grid_row = protect_series([breast], ProtectSettings(method="salm-tex", mask_ratio=0.3, mask_scope="sample", **FAST))
    assert np.array_equal(_all(sample, breast), _all(grid_row, breast))

def test_salm_on_3d_and_on_ct_is_min_min_with_a_20_percent_mask(volumes, breast):
    default = protect_series([volumes], ProtectSettings(**FAST))
    # salm-v1's min-min plus the per-round batch-norm re-estimate (which salm-v1, as first released, lacks)
    v1 = protect_series([volumes], ProtectSettings(method="salm-v1", recalibrate_norms=True, **FAST))
    assert np.array_equal(_all(default, volumes), _all(v1, volumes))
    assert default.summary["variant"] == "min-min" and default.summary["mask_ratio"] == 0.2 and default.summary["rounds"] == 1
    # 2D, but CT in HU: min-min too (no periodic texture at the reader's window)
    native = np.stack([x.read() for x in breast.samples[:16]]).astype(np.int16) * 4 - 400
    ct = series_from_arrays(native, [x.label for x in breast.samples[:16]], name="ct",
                            intensity=IntensityMap.for_ct(), stored=StoredFormat.for_dtype(np.int16))
    assert not uses_class_texture("salm", ct.intensity, 2) and uses_class_texture("salm", breast.intensity, 2)
    r = protect_series([ct], ProtectSettings(**FAST))
    assert r.summary["variant"] == "min-min" and r.mask_ratio(ct.id) == 0.2


def test_a_mixed_job_runs_both_variants_and_states_each_series_ratio(volumes, breast):
    events = []
    r = protect_series([volumes, breast], ProtectSettings(**FAST), Progress(events.append))
    assert r.summary["variant"] == "class texture (2D 8-bit images) + min-min (the others)"
    assert r.summary["mask_ratio_per_series"] == {volumes.id: 0.2, breast.id: 0.3}
    assert r.summary["mask_ratio"] is None  # no single ratio: the per-series figures hold
    vol_changed = np.mean(_all(r, volumes) != np.stack([x.read() for x in volumes.samples]))
    assert vol_changed <= 0.2 + 1e-6  # min-min kept its own ratio although the texture ran first
    texts = [derivation_text(r.settings, s, r.budget(s.id), r.mask_ratio(s.id)) for s in (volumes, breast)]
    assert "mask_ratio=0.2" in texts[0] and "mask_ratio=0.3" in texts[1]
    epochs = [e for e in events if e.metrics.get("epochs")]  # the texture's surrogate epochs move the bar
    assert epochs and [e.done for e in epochs] == sorted(e.done for e in epochs)


def test_more_classes_than_textures_fall_back_to_min_min(breast):
    images = np.stack([x.read() for x in breast.samples[:48]]).astype(np.uint8)
    ser = series_from_arrays(images, np.arange(48) % 12, name="twelve")
    logs = []
    r = protect_series([ser], ProtectSettings(**FAST), Progress(lambda e: logs.append(e.message)))
    assert r.summary["variant"] == "min-min" and r.summary["mask_ratio"] == 0.2
    assert any("more than 11 classes" in m for m in logs)


def test_mask_ratio_auto_in_the_options_and_the_preview():
    assert build_settings({"mask_ratio": "auto"})[0].mask_ratio is None
    assert build_settings({"mask_ratio": "0.25"})[0].mask_ratio == 0.25
    with pytest.raises(OptionError, match="mask-ratio .lots."):
        build_settings({"mask_ratio": "lots"})
    with pytest.raises(ValueError, match="mask_ratio"):
        ProtectSettings(mask_ratio=0)
    assert default_mask_ratio("salm", IntensityMap.for_uint8(), 2) == 0.3
    assert default_mask_ratio("salm", IntensityMap.for_uint8(), 3) == 0.2
    assert default_mask_ratio("salm-v1", IntensityMap.for_uint8(), 2) == 0.2
    assert default_mask_ratio("em", IntensityMap.for_ct(), 2) == 1.0
