"""badrcptto: refused recipients."""

from __future__ import annotations

import pytest

from helpers.fakes import addr, make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.badrcptto import Badrcptto

CONFIG = qconfig.load(None, {})
OPTS = {"entries": ["nobody@example.test", "@old.example.test gone since 2019"],
        "patterns": ["[%!]\tno routing tricks"]}


@pytest.mark.parametrize("rcpt,expected", [
    ("Nobody@Example.test", (Result.DENY, "5.7.1 mail to Nobody@Example.test not accepted here")),
    ("a@old.example.test", (Result.DENY, "5.7.1 gone since 2019")),
    ("a%b@example.test", (Result.DENY, "5.7.1 no routing tricks")),
    ("somebody@example.test", None),
])
def test_matching(rcpt, expected):
    p = Badrcptto(CONFIG, "badrcptto", OPTS)
    assert p.hook_rcpt(make_session(CONFIG), addr(rcpt), {}) == expected


def test_naughty_action_flags_only():
    p = Badrcptto(CONFIG, "badrcptto", {**OPTS, "action": "naughty"})
    sess = make_session(CONFIG)
    assert p.hook_rcpt(sess, addr("nobody@example.test"), {}) is Result.DECLINED
    assert sess.notes["naughty"].startswith("badrcptto: mail to nobody@")


def test_bad_message_placeholder():
    with pytest.raises(PluginError):
        Badrcptto(CONFIG, "badrcptto", {"message": "{nope}"})


@pytest.mark.parametrize("entry, rcpt, refused", [
    ("@bücher.test", "a@xn--bcher-kva.test", True),  # U-label listed, A-label sent
    ("x@xn--bcher-kva.test", "X@bücher.test", True),  # and the other way round
    ("@kiwi.test", "a@\u212aiwi.test", False),  # KELVIN SIGN: not a look-alike match
    ("@straße.test", "a@strasse.test", False),  # no IDNA 2003 mapping
])
def test_idn_entries(entry, rcpt, refused):
    p = Badrcptto(CONFIG, "badrcptto", {"entries": [entry]})
    result = p.hook_rcpt(make_session(CONFIG), addr(rcpt), {})
    assert (result is not None and result[0] is Result.DENY) is refused
