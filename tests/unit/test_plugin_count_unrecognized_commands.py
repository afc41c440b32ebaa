"""count_unrecognized_commands: disconnect at the count."""

from __future__ import annotations

import pytest

from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.count_unrecognized_commands import CountUnrecognizedCommands

CONFIG = qconfig.load(None, {})


def test_counts_then_disconnects():
    p = CountUnrecognizedCommands(CONFIG, "count_unrecognized_commands", {"count": 3})
    sess = make_session(CONFIG)
    assert p.hook_unrecognized_command(sess, "FOO", "") is None
    assert p.hook_unrecognized_command(sess, "BAR", "x") is None
    result, message = p.hook_unrecognized_command(sess, "BAZ", "")
    assert result is Result.DENYSOFT_DISCONNECT
    assert message == "4.7.0 Closing connection, 3 unrecognized commands"
    assert sess.notes["karma"] == -1


def test_fresh_session_starts_at_zero():
    p = CountUnrecognizedCommands(CONFIG, "c", {"count": 1})
    assert p.hook_unrecognized_command(make_session(CONFIG), "X", "") is not None
    assert p.hook_unrecognized_command(make_session(CONFIG), "X", "") is not None


@pytest.mark.parametrize("value", [0, -1, "4", 2.5])
def test_bad_count(value):
    with pytest.raises(PluginError):
        CountUnrecognizedCommands(CONFIG, "c", {"count": value})
