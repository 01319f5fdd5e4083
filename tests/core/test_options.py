"""Budget parsing: fractions of the reader's window and native units (12HU)."""

from __future__ import annotations

import pytest

from salm_desktop.core.options import OptionError, build_settings, parse_epsilon


@pytest.mark.parametrize("text, expected", [("8/255", (8 / 255, None, "")), ("0.03", (0.03, None, "")),
                                            ("12HU", (None, 12.0, "HU")), ("12.5 hu", (None, 12.5, "HU")),
                                            ("30native", (None, 30.0, "")), ("8", (8 / 255, None, "")),
                                            ("12", (12 / 255, None, ""))])
def test_parse_epsilon(text, expected):
    got = parse_epsilon(text)
    assert got[1:] == expected[1:]
    assert got[0] == pytest.approx(expected[0]) if expected[0] is not None else got[0] is None


@pytest.mark.parametrize("text, reason", [("300", r"in \(0, 1\]"), ("0", r"in \(0, 1\]"), ("0HU", "positive"), ("-3HU", "positive"),
                                          ("abcHU", "number before"), ("8/0", "not a number"), ("nan", "finite")])
def test_bad_epsilon_names_the_option(text, reason):
    with pytest.raises(OptionError, match=reason) as info:
        parse_epsilon(text)
    assert "epsilon" in str(info.value)


def test_build_settings_native_budget_and_noise_cap():
    settings, _ = build_settings({"epsilon": "12HU", "noise_cap": "0.5"})
    assert settings.epsilon_native == 12.0 and settings.epsilon_unit == "HU" and settings.noise_cap == 0.5
    assert settings.epsilon == pytest.approx(8 / 255)  # untouched: the native budget overrides it per series
    settings, _ = build_settings({"epsilon": "4/255"})
    assert settings.epsilon == pytest.approx(4 / 255) and settings.epsilon_native is None
    with pytest.raises(OptionError, match="noise cap"):
        build_settings({"noise_cap": "-1"})


def test_every_engine_setting_is_set_by_exactly_one_option():
    from dataclasses import fields

    from salm_desktop.core.option_schema import SCHEMA
    from salm_desktop.core.protect import ProtectSettings

    owners: dict[str, list[str]] = {}
    for option in SCHEMA:
        for name in option.fields:
            owners.setdefault(name, []).append(option.key)
    assert {f.name for f in fields(ProtectSettings)} == set(owners)
    assert all(len(keys) == 1 for keys in owners.values()), owners


def test_rare_settings_parse_from_strings_as_a_toml_or_cli_gives_them():
    settings, loader = build_settings({
        "mask_scope": "sample", "robust": "pgd", "init": "random", "stop_loss": "0.05", "extra_rounds": "2",
        "step_size": "1/255", "surrogate_lr": 0.05, "local_mean_free": "false", "precision": "fp32",
        "early_exit_loss": "none", "recompute_mask": "round", "foreground": "true", "labels": "clusters:3",
        "noise_cap": "none", "pgd_steps": 7, "train_steps": "0", "stop_accuracy": "0.9", "surrogate": "small_cnn",
        "batch_size": "8", "max_rounds": "3", "seed": "11", "method": "em", "device": "cpu", "mask_ratio": "0.5"})
    assert loader is None
    assert (settings.mask_scope, settings.robust, settings.init, settings.stop_loss, settings.extra_rounds) == \
        ("sample", "pgd", "random", 0.05, 2)
    assert settings.step_size == pytest.approx(1 / 255) and settings.surrogate_lr == 0.05
    assert (settings.local_mean_free, settings.precision, settings.early_exit_loss, settings.recompute_mask) == \
        (False, "fp32", None, "round")
    assert (settings.foreground, settings.labels, settings.n_clusters, settings.pgd_steps, settings.train_steps) == \
        (True, "clusters", 3, 7, 0)
    assert (settings.surrogate, settings.batch_size, settings.max_rounds, settings.seed) == ("small_cnn", 8, 3, 11)
    assert settings.effective_mask_ratio == 1.0  # em ignores the ratio


@pytest.mark.parametrize("options, reason", [({"robust": "maybe"}, "robust"), ({"mask_scope": "x"}, "mask-scope"),
                                             ({"seed": "1.5"}, "seed"), ({"pgd_steps": 0}, "pgd-steps"),
                                             ({"method": "magic"}, "method"), ({"colour": 1}, "unknown setting")])
def test_bad_options_are_named(options, reason):
    with pytest.raises(OptionError, match=reason):
        build_settings(options)


def test_cli_has_a_flag_for_every_option():
    from salm_desktop.cli import _build_parser
    from salm_desktop.core.option_schema import SCHEMA
    from salm_desktop.core.options import options_from_args

    args = _build_parser().parse_args(["protect", "in", "--out", "o", "--mask-scope", "sample", "--robust", "pgd",
                                       "--extra-rounds", "1", "--epsilon", "8"])
    assert options_from_args(args) == {"mask_scope": "sample", "robust": "pgd", "extra_rounds": "1", "epsilon": "8"}
    help_text = _build_parser()._subparsers._group_actions[0].choices["protect"].format_help()
    for option in SCHEMA:
        assert option.flag in help_text
