"""loop: more than max_hops Received:/Delivered-To: fields -> 554 5.4.6."""

from __future__ import annotations

import pytest

from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import HookResult, PluginError, Result
from qsmtp.plugins.builtin.loop import Loop, count_hops
from qsmtp.smtp.message import MessageBody
from qsmtp.smtp.replies import decide

CONFIG = qconfig.load(None, {})


def hops(received: int, delivered: int = 0) -> bytes:
    lines = [b"Received: from h%d by h%d;\n\tMon, 1 Jan 2024 00:00:00 +0000" % (i, i + 1)
             for i in range(received)]
    lines += [b"Delivered-To: u%d@x.test" % i for i in range(delivered)]
    return b"\n".join(lines + [b"From: a@x.test", b"", b"body", b""])


def run(p, message: bytes):
    sess = make_session(CONFIG)
    body = MessageBody()
    body.write(message)
    sess.transaction.body = body
    return p.hook_data_headers_end(sess), sess


def test_up_to_max_hops_passes_then_554_5_4_6():
    p = Loop(CONFIG, "loop", {"max_hops": 5})
    result, sess = run(p, hops(3, 2))
    assert result is Result.DECLINED and sess.transaction.notes["hops"] == 5
    result, _ = run(p, hops(4, 2))
    reply = decide("data_headers_end", HookResult.of(result), None)
    assert reply.wire == b"554 5.4.6 Too many hops, this message is looping\r\n"


def test_default_is_100():
    p = Loop(CONFIG, "loop", {})
    assert run(p, hops(100))[0] is Result.DECLINED
    assert run(p, hops(101))[0][0] is Result.DENY


def test_count_only_field_names_at_line_start():
    block = (b"Received: a\n\tReceived: folded, not a field\nX-Received: b\n"
             b"received : c\nDELIVERED-TO: d\nSubject: Received: e\n\n")
    assert count_hops(block) == 3


def test_bad_option():
    with pytest.raises(PluginError):
        Loop(CONFIG, "loop", {"max_hops": 0})
