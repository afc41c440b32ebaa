"""spamassassin: spamc protocol framing against an in-test fake spamd, reply
parsing, tags, reject_score, size limit, fail closed / pass.  The real spamd
is in tests/integration/test_plugins_content.py."""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest

from helpers.fake_daemon import FakeDaemon, recv_exact, recv_until, scan_against_hung_daemon
from helpers.fakes import session_with_spooled_body
from helpers.server import free_port
from qsmtp import config as qconfig
from qsmtp.plugins.api import HookResult, PluginError, Result
from qsmtp.plugins.builtin.spamassassin import (
    SpamAssassin,
    SpamdError,
    Verdict,
    parse_response,
    tag_headers,
)
from qsmtp.smtp.replies import decide

CONFIG = qconfig.load(None, {})
MESSAGE = b"From: a@x.test\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: hi\n\nhello\n"
SPAM = (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 18\r\nSpam: True ; 1003.3 / 5.0\r\n\r\n"
        b"GTUBE,MISSING_DATE")
HAM = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; -0.1 / 5.0\r\n\r\n"


def plugin(**opts):
    return SpamAssassin(CONFIG, "spamassassin", opts)


def session(message: bytes = MESSAGE, threshold: int = 1 << 20):
    return session_with_spooled_body(CONFIG, message, threshold)


def spamd_reply(reply: bytes, keep: bool = True):
    """A fake spamd: reads the request exactly as framed, answers `reply`."""
    def handler(sock):
        head = recv_until(sock, b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = recv_exact(sock, int(fields["Content-length"]))
        eof = sock.recv(1) == b""  # the client half-closed after the body
        sock.sendall(reply)
        return {"verb": lines[0], "fields": fields, "body": body if keep else len(body),
                "eof": eof}
    return handler


def test_request_framing_and_tags():
    sess = session()
    sess.transaction.prepend_header("X-Earlier", "added by a plugin before us")
    with FakeDaemon(spamd_reply(HAM)) as fake:
        result = plugin(address=fake.address, user="filter").hook_data_post(sess)
    assert not fake.errors
    seen = fake.seen[0]
    assert seen["verb"] == "SYMBOLS SPAMC/1.5"
    assert seen["fields"] == {"Content-length": str(len(seen["body"])), "User": "filter"}
    assert seen["body"] == b"X-Earlier: added by a plugin before us\n" + MESSAGE
    assert seen["eof"]
    assert result is Result.DECLINED
    txn = sess.transaction
    # Newest on top, like trace fields: ours above what earlier plugins added.
    assert txn.added_headers == ["X-Spam-Score: -0.1",
                                 "X-Spam-Status: No, score=-0.1 required=5.0 tests=none",
                                 "X-Earlier: added by a plugin before us"]
    assert txn.notes["spamassassin"] == {"spam": False, "score": -0.1, "required": 5.0,
                                         "tests": []}


def test_spam_is_tagged_and_refused_with_550_at_reject_score():
    sess = session()
    with FakeDaemon(spamd_reply(SPAM), unix=True) as fake:
        result = plugin(address=fake.address, reject_score=10).hook_data_post(sess)
    assert isinstance(result, HookResult) and result.result is Result.DENY
    assert decide("data_post", result, None).wire == (
        b"550 5.7.1 Message refused as spam (score 1003.3, limit 10.0)\r\n")
    assert sess.transaction.added_headers[:2] == ["X-Spam-Flag: YES", "X-Spam-Score: 1003.3"]
    assert sess.transaction.added_headers[2] == "X-Spam-Level: " + "*" * 50
    assert sess.notes["karma"] == -1
    # Below the reject score: tagged only.
    sess = session()
    with FakeDaemon(spamd_reply(SPAM)) as fake:
        assert plugin(address=fake.address, reject_score=2000).hook_data_post(sess) \
            is Result.DECLINED
    assert sess.transaction.added_headers[0] == "X-Spam-Flag: YES"


def test_parse_response():
    verdict = parse_response(SPAM)
    assert verdict == Verdict(True, 1003.3, 5.0, ("GTUBE", "MISSING_DATE"))
    assert parse_response(HAM) == Verdict(False, -0.1, 5.0, ())
    with pytest.raises(SpamdError, match="76 Bad header line"):
        parse_response(b"SPAMD/1.0 76 Bad header line: (EOF)\r\n\r\n")
    with pytest.raises(SpamdError, match="no Spam: header"):
        parse_response(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n")
    with pytest.raises(SpamdError, match="incomplete"):
        parse_response(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1")
    with pytest.raises(SpamdError, match="not a spamd reply"):
        parse_response(b"HTTP/1.0 200 OK\r\n\r\n")
    # Rule names from the daemon are not trusted blindly into a header.
    odd = b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.0 / 5.0\r\n\r\nA_B,bad rule\r\nX:,C1\r\n"
    assert parse_response(odd).tests == ("A_B", "C1")


def test_scores_print_with_one_decimal_and_no_negative_zero():
    fields = dict(tag_headers(Verdict(False, -0.001, 5.0, ("NO_RELAYS",))))
    assert fields["X-Spam-Score"] == "0.0"
    assert fields["X-Spam-Status"] == "No, score=0.0 required=5.0 tests=NO_RELAYS"
    assert dict(tag_headers(Verdict(False, -1.25, 5.0, ())))["X-Spam-Score"] == "-1.2"


def test_long_test_lists_are_folded():
    tests = tuple(f"SOME_LONG_RULE_NAME_{i:02d}" for i in range(12))
    status = dict(tag_headers(Verdict(True, 8.0, 5.0, tests)))["X-Spam-Status"]
    lines = status.split("\n\t")
    assert len(lines) > 3 and all(len(line) <= 80 for line in lines)
    assert "".join(lines) == "Yes, score=8.0 required=5.0 tests=" + ",".join(tests)


@pytest.mark.parametrize("mode,expected", [
    ("rename", b"X-Old-Spam-Flag: NO\nX-Old-Spam-Status: No,\n\tscore=-9\nSubject: s\n\n"),
    ("drop", b"Subject: s\n\n"),
    ("keep", b"X-Spam-Flag: NO\nX-Spam-Status: No,\n\tscore=-9\nSubject: s\n\n"),
])
def test_incoming_spam_headers(mode, expected):
    sess = session(b"X-Spam-Flag: NO\nX-Spam-Status: No,\n\tscore=-9\nSubject: s\n\nbody\n")
    with FakeDaemon(spamd_reply(HAM)) as fake:
        plugin(address=fake.address, old_headers=mode).hook_data_post(sess)
    assert sess.transaction.body.header_block == expected
    assert fake.seen[0]["body"].startswith(expected)  # spamd sees what is queued


def test_too_large_is_not_scanned():
    sess = session(MESSAGE + b"x" * 2000 + b"\n")
    with FakeDaemon(spamd_reply(SPAM)) as fake:
        assert plugin(address=fake.address, max_size=1000).hook_data_post(sess) \
            is Result.DECLINED
    assert fake.connections == 0
    assert sess.transaction.added_headers == []
    assert sess.transaction.notes["spamassassin"] == {"skipped": len(MESSAGE) + 2001}


def test_unreachable_defers_or_passes():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    sess = session()
    result = plugin(address=address).hook_data_post(sess)
    assert decide("data_post", HookResult.of(result), None).wire.startswith(b"451 4.3.0 ")
    assert "ConnectionRefusedError" in sess.transaction.notes["spamassassin"]["error"]
    sess = session()
    assert plugin(address=address, on_error="pass").hook_data_post(sess) is Result.DECLINED
    assert sess.transaction.added_headers == []


def test_spamd_error_reply_defers():
    sess = session()
    with FakeDaemon(spamd_reply(b"SPAMD/1.0 75 EX_TEMPFAIL\r\n\r\n")) as fake:
        result, message = plugin(address=fake.address).hook_data_post(sess)
    assert result is Result.DENYSOFT and message.startswith("4.3.0 ")


def test_timeout_is_bounded_by_the_option():
    sess = session()
    result, took = scan_against_hung_daemon(
        lambda address: plugin(address=address, timeout=0.5).hook_data_post(sess),
        lambda sock: recv_until(sock, b"\r\n\r\n"))
    assert result[0] is Result.DENYSOFT
    assert 0.4 < took < 3.0


def test_spooled_message_is_streamed_not_loaded():
    """A 24 MiB message spooled to disk goes to spamd in pieces: the
    process never holds it (or a copy of it) in memory."""
    line = b"spooled body line " * 4 + b"\n"
    big = MESSAGE + line * ((24 << 20) // len(line))
    sess = session(big, threshold=1 << 16)
    assert sess.transaction.body.spooled
    digest = hashlib.sha256(big).hexdigest()
    del big

    def hashing(sock):
        head = recv_until(sock, b"\r\n\r\n")
        size = int(head.split(b"Content-length: ")[1].split(b"\r\n")[0])
        sha, left = hashlib.sha256(), size
        while left:
            chunk = sock.recv(min(left, 1 << 16))
            sha.update(chunk)
            left -= len(chunk)
        sock.sendall(HAM)
        return size, sha.hexdigest()

    with FakeDaemon(hashing) as fake:
        p = plugin(address=fake.address, max_size=30 << 20)
        tracemalloc.start()
        result = p.hook_data_post(sess)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert result is Result.DECLINED and not fake.errors
    assert fake.seen[0] == (sess.transaction.body.size, digest)
    assert peak < 2 << 20, f"peak {peak} bytes while streaming 24 MiB"


@pytest.mark.parametrize("opts,key", [
    ({"address": "localhost"}, "address"),
    ({"address": "unix:relative.sock"}, "address"),
    ({"timeout": 30}, "timeout"),          # = server.hook_timeout: 451 would pre-empt pass
    ({"timeout": 0}, "timeout"),
    ({"max_size": 0}, "max_size"),
    ({"on_error": "ignore"}, "on_error"),
    ({"user": "a\nb"}, "user"),
    ({"reject_score": "high"}, "reject_score"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_options_fail_at_load(opts, key):
    with pytest.raises(PluginError) as err:
        plugin(**opts)
    assert err.value.key == key


def test_addresses():
    assert plugin(address="[::1]:783").sockaddr == ("::1", 783)
    assert plugin(address="/run/spamd.sock").sockaddr == "/run/spamd.sock"
    assert plugin().sockaddr == ("127.0.0.1", 783)
