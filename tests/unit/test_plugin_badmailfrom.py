"""badmailfrom / badrcptto: exact, @domain and pattern entries."""

from __future__ import annotations

import pytest

from helpers.fakes import addr, make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.badmailfrom import Badmailfrom

CONFIG = qconfig.load(None, {})
OPTS = {"entries": ["Spammer@Bad.test", "@junk.test no junk here", "# comment", ""],
        "patterns": ["^[0-9]{6,}@\tnumeric senders not welcome", r"\.ru$"]}


def verdict(sender, **opts):
    p = Badmailfrom(CONFIG, "badmailfrom", {**OPTS, **opts})
    sess = make_session(CONFIG, sender=sender)
    assert p.hook_mail(sess, sess.transaction.sender, {}) is None  # refused at RCPT
    return p.hook_rcpt(sess, addr("u@example.test"), {})


@pytest.mark.parametrize("sender,expected", [
    ("spammer@bad.test", (Result.DENY, "5.7.1 Your envelope sender is in my badmailfrom list")),
    ("anyone@JUNK.test", (Result.DENY, "5.7.1 no junk here")),
    ("1234567@x.test", (Result.DENY, "5.7.1 numeric senders not welcome")),
    ("ivan@mail.ru", (Result.DENY, "5.7.1 Your envelope sender is in my badmailfrom list")),
    ("other@bad.test", None),
    ("spammer@sub.junk.test", None),
    ("", None),  # null sender
])
def test_matching(sender, expected):
    assert verdict(sender) == expected


def test_action_and_file(tmp_path):
    listing = tmp_path / "badmailfrom"
    listing.write_text("@file.test from the file\n")
    assert verdict("x@file.test", file=str(listing), action="denysoft") == \
        (Result.DENYSOFT, "4.7.1 from the file")


@pytest.mark.parametrize("opts", [{"entries": ["nodomain"]}, {"patterns": ["(unclosed"]},
                                  {"file": "/nonexistent/badmailfrom"}, {"action": "x"}])
def test_bad_options(opts):
    with pytest.raises(PluginError):
        Badmailfrom(CONFIG, "badmailfrom", opts)


@pytest.mark.parametrize("entry, sender", [
    ("@straße.test", "u@xn--strae-oqa.test"),  # U-label listed, A-label sent
    ("@xn--strae-oqa.test", "u@straße.test"),  # and the other way round
    ("jörg@XN--Strae-OQA.test", "Jörg@straße.test"),
    ("@[192.0.2.1]", "u@[192.0.2.1]"),
])
def test_idn_entries_match_both_forms(entry, sender):
    assert verdict(sender, entries=[entry], patterns=[])[0] is Result.DENY


@pytest.mark.parametrize("entry, sender", [
    ("@straße.test", "u@strasse.test"),  # no IDNA 2003 mapping
    ("@kiwi.test", "u@\u212aiwi.test"),  # KELVIN SIGN is not "k" (and not valid)
])
def test_look_alikes_do_not_match(entry, sender):
    assert verdict(sender, entries=[entry], patterns=[]) is None


def test_pattern_sees_the_a_label_too():
    assert verdict("u@straße.test", entries=[], patterns=[r"@xn--strae-oqa\.test$"])[0] \
        is Result.DENY


@pytest.mark.parametrize("entry", ["@\u212aiwi.test", "u@xn--zz.test", "@a..test"])
def test_entry_outside_idna2008_is_a_load_error(entry):
    with pytest.raises(PluginError, match="entries"):
        Badmailfrom(CONFIG, "badmailfrom", {"entries": [entry]})
