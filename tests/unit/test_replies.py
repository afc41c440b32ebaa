"""smtp/replies.py: wire format and THE (hook, Result) -> reply table."""

from __future__ import annotations

import pytest

from qsmtp.plugins.api import HookResult, Result
from qsmtp.smtp.replies import PLUGIN_FAILED, REFUSALS, Reply, constant, decide

OK_REPLY = Reply(250, "2.1.5", "Recipient ok")


def test_wire_format():
    assert Reply(250, "2.0.0", "Ok").wire == b"250 2.0.0 Ok\r\n"
    assert Reply(250, "", ("a", "b", "c")).wire == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(220, "", "mx ESMTP").wire == b"220 mx ESMTP\r\n"


def test_control_characters_cannot_break_the_reply():
    reply = OK_REPLY.with_text("2.1.5 ok\r\n250 fake")
    assert reply.wire == b"250-2.1.5 ok\r\n250 2.1.5 250 fake\r\n"
    assert b"\x00" not in Reply(250, "2.0.0", "a\x00b").wire


@pytest.mark.parametrize("result, hook, code, enhanced, close", [
    (Result.DENY, "rcpt", 550, "5.7.1", False),
    (Result.DENYSOFT, "rcpt", 450, "4.7.1", False),
    (Result.DENY_DISCONNECT, "mail", 550, "5.7.1", True),
    (Result.DENYSOFT_DISCONNECT, "helo", 421, "4.7.0", True),
    (Result.DENY, "connect", 554, "5.7.1", True),
    (Result.DENYSOFT, "connect", 421, "4.7.0", True),
    (Result.DENY, "data_post", 554, "5.7.1", False),
    (Result.DENYSOFT, "queue", 451, "4.3.0", False),
    (Result.DENY_DISCONNECT, "data", 554, "5.7.1", True),
    (Result.DENYSOFT_DISCONNECT, "data_headers_end", 421, "4.7.0", True),
])
def test_refusals(result, hook, code, enhanced, close):
    reply = decide(hook, HookResult(result), OK_REPLY)
    assert (reply.code, reply.enhanced, reply.close) == (code, enhanced, close)


def test_every_refusal_has_an_enhanced_code():
    for reply in REFUSALS.values():
        assert reply.enhanced and reply.enhanced[0] == str(reply.code)[0]


def test_success_and_default():
    assert decide("rcpt", HookResult(Result.OK), OK_REPLY) is OK_REPLY
    assert decide("rcpt", HookResult(Result.DONE), OK_REPLY) is OK_REPLY
    nobody = Reply(450, "4.7.1", "nobody")
    assert decide("rcpt", HookResult(Result.DECLINED), OK_REPLY, nobody) is nobody
    assert decide("data_post", HookResult(Result.DECLINED), None) is None


def test_failure_is_451_everywhere():
    for hook in ("connect", "mail", "rcpt", "data_post", "queue"):
        failed = HookResult(Result.DENYSOFT, "boom", failed=True)
        assert decide(hook, failed, OK_REPLY) is PLUGIN_FAILED
    assert PLUGIN_FAILED.wire.startswith(b"451 4.3.0 ")


def test_plugin_message_and_enhanced_code():
    reply = decide("rcpt", HookResult(Result.DENY, "5.1.1 no such user"), OK_REPLY)
    assert reply.wire == b"550 5.1.1 no such user\r\n"
    reply = decide("rcpt", HookResult(Result.DENY, "go away"), OK_REPLY)
    assert reply.wire == b"550 5.7.1 go away\r\n"
    # A code of the wrong class is text, ours stays.
    reply = decide("rcpt", HookResult(Result.DENY, "4.1.1 odd"), OK_REPLY)
    assert reply.wire == b"550 5.7.1 4.1.1 odd\r\n"
    queued = Reply(250, "2.0.0", "Ok: queued as 1")
    reply = decide("queue", HookResult(Result.OK, "2.0.0 Ok: queued as X"), queued)
    assert reply.wire == b"250 2.0.0 Ok: queued as X\r\n"


def test_plugin_reply_code_of_the_same_class():
    virus = HookResult(Result.DENY, "5.7.1 Virus found: X", code=552)
    assert decide("data_post", virus, None).wire == b"552 5.7.1 Virus found: X\r\n"
    assert decide("data_post", HookResult(Result.DENY, code=550), None).code == 550
    # A code of another class (or out of range) is ignored: the table decides.
    assert decide("data_post", HookResult(Result.DENYSOFT, code=552), None).code == 451
    assert decide("data_post", HookResult(Result.DENY, code=599 + 100), None).code == 554
    assert decide("connect", HookResult(Result.DENY, code=521), None).close


def test_constant_replies_are_built_once_and_one_line_stays_a_string():
    greeting = constant(220, "", "mx ESMTP qsmtp")
    assert constant(220, "", "mx ESMTP qsmtp") is greeting
    assert greeting.wire == b"220 mx ESMTP qsmtp\r\n"
    queued = OK_REPLY.with_text("2.0.0 Ok: queued as X")
    assert queued.text == "Ok: queued as X"
    assert queued.wire == b"250 2.0.0 Ok: queued as X\r\n"
