"""Typed config sections: each setting is declared once, as a field of its
section's dataclass (qsmtp/settings.py), and `Config` carries one frozen
instance per section, agreeing with `values` and the flags given."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from qsmtp import config as config_mod
from qsmtp.settings import SECTIONS, SETTINGS, Sections


def test_every_setting_is_a_field_of_its_section_and_nothing_else():
    kinds = typing.get_type_hints(Sections)
    fields = {(section, f.name) for section, kind in kinds.items()
              for f in dataclasses.fields(kind)}
    assert {(s.section, s.key) for s in SETTINGS} == fields
    assert tuple(kinds) == SECTIONS


def test_sections_carry_the_loaded_values(tmp_path):
    path = tmp_path / "qsmtp.toml"
    path.write_text('[server]\nchildren = 7\n[relay]\ndomains = ["example.test"]\n')
    config = config_mod.load(str(path), {"server.idle_children": 2})
    assert (config.server.children, config.server.idle_children) == (7, 2)
    assert config.relay.domains == ["example.test"]
    for setting in SETTINGS:
        section = getattr(config, setting.section)
        assert getattr(section, setting.key) == config.values[setting.name], setting.name
        assert isinstance(getattr(section, setting.key), setting.type), setting.name


def test_sections_are_read_only():
    config = config_mod.load(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.children = 1  # type: ignore[misc]
