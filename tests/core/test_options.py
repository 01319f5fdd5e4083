"""Budget parsing: fractions of the reader's window and native units (12HU)."""

from __future__ import annotations

import pytest

from salm_desktop.core.options import OptionError, build_settings, parse_epsilon


@pytest.mark.parametrize("text, expected", [("8/255", (8 / 255, None, "")), ("0.03", (0.03, None, "")),
                                            ("12HU", (None, 12.0, "HU")), ("12.5 hu", (None, 12.5, "HU")),
                                            ("30native", (None, 30.0, ""))])
def test_parse_epsilon(text, expected):
    got = parse_epsilon(text)
    assert got[1:] == expected[1:]
    assert got[0] == pytest.approx(expected[0]) if expected[0] is not None else got[0] is None


@pytest.mark.parametrize("text, reason", [("12", r"in \(0, 1\]"), ("0HU", "positive"), ("-3HU", "positive"),
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
