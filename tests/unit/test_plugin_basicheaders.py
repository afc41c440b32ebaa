"""basicheaders: From:/Date: required, Date: within past_days/future_days."""

from __future__ import annotations

import email.utils
import time

import pytest

from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.basicheaders import BasicHeaders, parse_date
from qsmtp.smtp.message import MessageBody

CONFIG = qconfig.load(None, {})
DAY = 86400


def plugin(**opts):
    return BasicHeaders(CONFIG, "basicheaders", opts)


def date(offset_days: float = 0) -> str:
    return email.utils.formatdate(time.time() + offset_days * DAY)


def check(p, header: str, **attrs):
    sess = make_session(CONFIG, **attrs)
    body = MessageBody()
    assert body.write(header.encode() + b"\n\nbody\n")
    sess.transaction.body = body
    return p.hook_data_headers_end(sess), sess


def test_complete_header_passes():
    assert check(plugin(), f"From: a@x.test\nDate: {date()}")[0] is Result.DECLINED


@pytest.mark.parametrize("header,missing", [
    (f"Date: {date()}", "From"),
    ("From: a@x.test", "Date"),
    (f"From:   \nDate: {date()}", "From"),        # present but empty
])
def test_missing_fields_are_refused(header, missing):
    result, message = check(plugin(), header)[0]
    assert result is Result.DENY
    assert message == f"5.7.1 Message has no {missing}: header field"


def test_unparseable_date_counts_as_missing():
    result, message = check(plugin(), "From: a@x.test\nDate: yesterday-ish")[0]
    assert result is Result.DENY and "no valid Date:" in message
    # Not required: an odd Date: is left alone.
    assert check(plugin(require=["From"]), "From: a@x\nDate: soon")[0] is Result.DECLINED


def test_date_range():
    p = plugin(past_days=5, future_days=2)
    assert check(p, f"From: a@x\nDate: {date(-4.9)}")[0] is Result.DECLINED
    assert check(p, f"From: a@x\nDate: {date(1.9)}")[0] is Result.DECLINED
    result, message = check(p, f"From: a@x\nDate: {date(-5.1)}")[0]
    assert result is Result.DENY and message.endswith("too far in the past")
    result, message = check(p, f"From: a@x\nDate: {date(2.1)}")[0]
    assert result is Result.DENY and message.endswith("too far in the future")
    # Default: no range check at all.
    assert check(plugin(), f"From: a@x\nDate: {date(-4000)}")[0] is Result.DECLINED


def test_require_list_and_actions():
    p = plugin(require=["From", "Date", "Message-ID"], action="denysoft")
    result, message = check(p, f"From: a@x\nDate: {date()}")[0]
    assert result is Result.DENYSOFT and message == "4.7.1 Message has no Message-ID: header field"
    assert check(plugin(action="note"), "Subject: x")[0] is Result.DECLINED
    result, sess = check(plugin(action="naughty"), "Subject: x")
    assert result is Result.DECLINED and sess.notes["naughty"].startswith("basicheaders: ")


def test_relay_clients_and_whitelisted_are_not_checked():
    p = plugin()
    assert check(p, "Subject: x", relay_client=True)[0] is Result.DECLINED
    assert check(p, "Subject: x", auth_user="u")[0] is Result.DECLINED
    result, sess = check(p, "Subject: x")
    assert result[0] is Result.DENY
    sess.notes["whitelisthost"] = True
    assert p.hook_data_headers_end(sess) is Result.DECLINED


def test_parse_date():
    assert parse_date("Mon, 1 Jan 2024 00:00:00 +0000") == 1704067200.0
    assert parse_date("Mon, 1 Jan 2024 01:00:00 +0100") == 1704067200.0
    assert parse_date(" Mon,\n\t1 Jan 2024 00:00:00 +0000") == 1704067200.0  # folded
    for bad in ("", "tomorrow", "Mon, 99 Foo 2024 00:00:00", "1 Jan 99999999999 00:00 +0000"):
        assert parse_date(bad) is None


@pytest.mark.parametrize("opts,key", [
    ({"require": ["From:"]}, "require"),
    ({"require": [""]}, "require"),
    ({"require": [3]}, "require"),
    ({"past_days": -1}, "past_days"),
    ({"action": "reject"}, "action"),
])
def test_bad_options(opts, key):
    with pytest.raises(PluginError) as err:
        plugin(**opts)
    assert err.value.key == key
