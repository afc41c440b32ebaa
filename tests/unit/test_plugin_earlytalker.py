"""earlytalker against the described engine interface session.peek_early_talk(wait)."""

from __future__ import annotations

import pytest

from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.earlytalker import Earlytalker

CONFIG = qconfig.load(None, {})


def session(talks: bool):
    sess = make_session(CONFIG)
    sess.waits = []

    def peek(wait):  # what the engine provides (see the plugin docstring)
        sess.waits.append(wait)
        return talks
    sess.peek_early_talk = peek
    return sess


def plugin(**opts):
    return Earlytalker(CONFIG, "earlytalker", opts)


def test_talker_refused_at_connect_with_wait():
    sess = session(True)
    result, message = plugin(wait=0.5).hook_connect(sess)
    assert result is Result.DENYSOFT
    assert message == "4.7.1 Connecting host started transmitting before SMTP greeting"
    assert sess.waits == [0.5]


def test_polite_client_passes():
    sess = session(False)
    p = plugin()
    assert p.hook_connect(sess) is None
    assert p.hook_mail(sess, sess.transaction.sender, {}) is None


def test_defer_reject_refuses_at_mail():
    sess, p = session(True), plugin(defer_reject=True, action="deny")
    assert p.hook_connect(sess) is None
    assert p.hook_mail(sess, sess.transaction.sender, {})[0] is Result.DENY


def test_check_at_data():
    sess, p = session(True), plugin(check_at="data")
    assert p.hook_connect(sess) is None and sess.waits == []
    assert p.hook_data(sess)[0] is Result.DENYSOFT


def test_naughty_and_whitelisted():
    sess = session(True)
    assert plugin(action="naughty").hook_connect(sess) is Result.DECLINED
    assert sess.notes["naughty"].startswith("earlytalker:")
    sess = session(True)
    sess.notes["whitelisthost"] = "karma"
    assert plugin().hook_connect(sess) is None and sess.waits == []  # no delay either


@pytest.mark.parametrize("opts", [{"wait": -1}, {"wait": 30}, {"check_at": "helo"},
                                  {"action": "drop"}])
def test_bad_options(opts):
    with pytest.raises(PluginError):
        plugin(**opts)
