"""Every number qsmtp reads has an upper bound with a reason (issue 12.2):
no setting or plugin option can make it allocate or wait without limit."""

from __future__ import annotations

import pytest

from qsmtp import config
from qsmtp.plugins import api
from qsmtp.settings import SETTINGS

NUMBERS = [s for s in SETTINGS if s.type is int]


@pytest.mark.parametrize("setting", NUMBERS, ids=lambda s: s.name)
def test_every_number_setting_is_bounded_with_a_reason(setting):
    low, high, why = setting.check.bounds
    assert why, f"{setting.name}: the bound needs a reason"
    assert low <= setting.default <= high
    with pytest.raises(config.ConfigError) as caught:
        config.load(None, {setting.name: high + 1})
    assert caught.value.key == setting.name and str(high) in caught.value.reason
    with pytest.raises(config.ConfigError):
        config.load(None, {setting.name: 10 ** 21})


def test_huge_children_is_refused_before_anything_is_sized():
    with pytest.raises(config.ConfigError, match="server.children: must be between 1 and"):
        config.load(None, {"server.children": 99999999})


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1 << 40])
def test_plugin_number_options_are_finite_and_bounded(value):
    class Waits(api.Plugin):
        options = {"wait": api.Option(float, 1.0, "seconds")}

    with pytest.raises(api.PluginError, match="wait: must be between"):
        Waits(None, "waits", {"wait": value})


def test_plugin_explicit_bounds():
    from qsmtp.plugins.builtin.earlytalker import Earlytalker

    with pytest.raises(api.PluginError, match="must be between 0 and 60"):
        Earlytalker(config.load(None), "earlytalker", {"wait": 3600.0})
