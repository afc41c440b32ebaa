"""naughty: flags raised by other plugins are refused at the configured stage."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from helpers.fakes import addr, make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.naughty import Naughty, act, with_code

CONFIG = qconfig.load(None, {})


def plugin(**opts):
    return Naughty(CONFIG, "naughty", opts)


def flagged(**kw):
    sess = make_session(CONFIG, **kw)
    fake = SimpleNamespace(name="dnsbl", log=Naughty(CONFIG, "n", {}).log)
    assert act(sess, fake, "naughty", "listed in bl.test") is Result.DECLINED
    return sess


def test_default_refuses_at_data_not_before():
    p, sess = plugin(), flagged()
    assert p.hook_connect(sess) is None
    assert p.hook_mail(sess, sess.transaction.sender, {}) is None
    assert p.hook_rcpt(sess, addr("u@example.test"), {}) is None
    result, message = p.hook_data(sess)
    assert result is Result.DENY_DISCONNECT
    assert message == "5.7.1 listed in bl.test"
    assert sess.notes["karma"] == -1


@pytest.mark.parametrize("stage", ["connect", "mail", "rcpt"])
def test_reject_stage(stage):
    p, sess = plugin(reject=stage), flagged()
    calls = {"connect": lambda: p.hook_connect(sess),
             "mail": lambda: p.hook_mail(sess, sess.transaction.sender, {}),
             "rcpt": lambda: p.hook_rcpt(sess, addr("u@example.test"), {})}
    assert calls[stage]() is not None
    assert p.hook_data(sess) is not None  # later stages refuse too


def test_reject_type_and_postmaster():
    p, sess = plugin(reject="rcpt", reject_type="temp"), flagged()
    assert p.hook_rcpt(sess, addr("postmaster@example.test"), {}) is None
    result, message = p.hook_rcpt(sess, addr("u@example.test"), {})
    assert result is Result.DENYSOFT and message.startswith("4.7.1 ")


def test_flagging_plugin_reject_type_wins_and_first_flag_wins():
    sess = make_session(CONFIG)
    fake = SimpleNamespace(name="x", log=plugin().log)
    act(sess, fake, "naughty", "first", reject_type="temp")
    act(sess, fake, "naughty", "second", reject_type="perm")
    assert sess.notes["naughty"] == "x: first"
    result, _ = plugin().hook_data(sess)
    assert result is Result.DENYSOFT


def test_unflagged_and_whitelisted_pass():
    p = plugin(reject="connect")
    assert p.hook_data(make_session(CONFIG)) is None
    sess = flagged()
    sess.notes["whitelisthost"] = "hosts_allow"
    assert p.hook_data(sess) is None


def test_act_results_and_codes():
    sess = make_session(CONFIG)
    fake = SimpleNamespace(name="x", log=plugin().log)
    assert act(sess, fake, "deny", "no") == (Result.DENY, "5.7.1 no")
    assert act(sess, fake, "denysoft", "later") == (Result.DENYSOFT, "4.7.1 later")
    assert act(sess, fake, "denysoft_disconnect", "bye")[0] is Result.DENYSOFT_DISCONNECT
    assert act(sess, fake, "note", "fyi") is Result.DECLINED
    assert with_code("5.7.0", "4.2.1 own code") == "4.2.1 own code"


def test_bad_option():
    with pytest.raises(PluginError):
        plugin(reject="helo")
