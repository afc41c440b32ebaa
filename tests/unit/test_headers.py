"""headers: the Received: line and Authentication-Results: renaming."""

from __future__ import annotations

import email.utils

import pytest

from helpers.fakes import make_session, message_body
from qsmtp import config as qconfig
from qsmtp.plugins.builtin.headers import Headers, received_value, rename_auth_results

DATE = "Tue, 01 Apr 2025 12:00:00 +0000"


@pytest.fixture()
def cfg(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('[server]\nme = "mx.example.test"\n')
    return qconfig.load(str(path))


def test_received_single_recipient(cfg):
    sess = make_session(cfg)
    txn = sess.transaction
    assert received_value(sess, txn, "mx.example.test", DATE) == (
        "from client.test ([192.0.2.7])\n"
        f"\tby mx.example.test (qsmtp) with ESMTP id {txn.id}\n"
        f"\tfor <u@example.test>; {DATE}")


def test_received_tls_auth_host_and_several_recipients(cfg):
    sess = make_session(cfg, rcpts=("a@example.test", "b@example.test"), tls=True,
                        tls_cipher="TLS_AES_256_GCM_SHA384", auth_user="alice",
                        remote_host="client.example.net")
    txn = sess.transaction
    assert received_value(sess, txn, "mx.example.test", DATE) == (
        "from client.test (client.example.net [192.0.2.7])\n"
        f"\tby mx.example.test (qsmtp) with ESMTPSA (using TLS_AES_256_GCM_SHA384)"
        f" id {txn.id};\n\t{DATE}")


def test_received_ipv6_and_plain_smtp(cfg):
    sess = make_session(cfg, ip="2001:db8::7", esmtp=False, helo_host=None)
    value = received_value(sess, sess.transaction, "mx", DATE)
    assert value.startswith("from [IPv6:2001:db8::7] ([IPv6:2001:db8::7])\n\tby mx (qsmtp) "
                            "with SMTP id ")


@pytest.mark.parametrize("tls,auth_user,protocol", [
    (False, None, "UTF8SMTP"), (True, None, "UTF8SMTPS"),
    (False, "alice", "UTF8SMTPA"), (True, "alice", "UTF8SMTPSA")])
def test_received_names_smtputf8_transactions_as_rfc6531_says(cfg, tls, auth_user, protocol):
    # RFC 6531 3.7.3 (Postfix writes the same): an SMTPUTF8 transaction is
    # "with UTF8SMTP[S][A]"; the one without SMTPUTF8 stays ESMTP[S][A].
    sess = make_session(cfg, tls=tls, auth_user=auth_user)
    txn = sess.transaction
    txn.mail_params = {"SMTPUTF8": None}
    assert f" with {protocol} " in received_value(sess, txn, "mx", DATE) + " "
    txn.mail_params = {}
    assert f" with {protocol.replace('UTF8SMTP', 'ESMTP')} " \
        in received_value(sess, txn, "mx", DATE) + " "


def test_hook_prepends_received_with_a_real_date(cfg):
    sess = make_session(cfg)
    sess.transaction.added_headers.append("X-Other: 1")
    assert Headers(cfg, "headers", {}).hook_data_post(sess) is None
    first = sess.transaction.added_headers[0]
    assert first.startswith("Received: from client.test ([192.0.2.7])\n\tby mx.example.test")
    assert sess.transaction.added_headers[1] == "X-Other: 1"
    stamp = first.rsplit("; ", 1)[1]
    assert email.utils.parsedate_to_datetime(stamp) is not None


def test_authentication_results_are_renamed_in_the_header_block_only():
    body = message_body(b"Authentication-Results: evil.test; spf=pass\n"
                        b" smtp.mailfrom=x\n"
                        b"Subject: about Authentication-Results: headers\n"
                        b"authentication-results : lower\n"
                        b"X-Authentication-Results: left alone\n\n"
                        b"Authentication-Results: in the body stays\n")
    rename_auth_results(body)
    assert body.header_block == (
        b"X-Original-Authentication-Results: evil.test; spf=pass\n"
        b" smtp.mailfrom=x\n"
        b"Subject: about Authentication-Results: headers\n"
        b"X-Original-authentication-results : lower\n"
        b"X-Authentication-Results: left alone\n\n")
    assert b"".join(body.iter_chunks())[len(body.header_block):] == \
        b"Authentication-Results: in the body stays\n"


HOSTILE = "a\x1b]0;pwn\x07\x0b\x0c\x7f\u0085\u2028\u202e" + b"\xff\xfe".decode(
    "utf-8", "surrogateescape")


def test_received_escapes_hostile_values(cfg):
    # The engine refuses these at HELO/RCPT; a plugin or a PTR name must not
    # be able to put them into the header either.
    sess = make_session(cfg, rcpts=(f"{HOSTILE}@example.test",), remote_host=f"{HOSTILE}.ptr")
    sess.helo_host = HOSTILE
    value = received_value(sess, sess.transaction, "mx.example.test", DATE)
    raw = value.encode("utf-8")  # valid UTF-8: no lone surrogate left
    escaped = "a\\x1B]0;pwn\\x07\\x0B\\x0C\\x7F\\x85\\u2028\\u202E\\xFF\\xFE"
    assert value.startswith(f"from {escaped} ({escaped}.ptr [192.0.2.7])\n")
    assert f"for <{escaped}@example.test>;" in value
    assert not any(byte < 0x20 and byte not in b"\n\t" or byte == 0x7F for byte in raw)
    assert value.count("\n") == 2  # folded exactly where we fold, nowhere else


def test_received_date_is_now_and_formatted_once_a_second(cfg, monkeypatch):
    from qsmtp.plugins.builtin import headers
    sess = make_session(cfg)
    calls = []
    real = email.utils.formatdate
    monkeypatch.setattr(headers.email.utils, "formatdate",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(headers.time, "time", lambda: 1743508800.25)
    first = received_value(sess, sess.transaction, "mx.example.test")
    monkeypatch.setattr(headers.time, "time", lambda: 1743508800.75)
    assert received_value(sess, sess.transaction, "mx.example.test") == first
    assert first.endswith("; " + real(1743508800, localtime=True)) and len(calls) == 1
    monkeypatch.setattr(headers.time, "time", lambda: 1743508801.0)
    assert received_value(sess, sess.transaction, "mx.example.test").endswith(
        "; " + real(1743508801, localtime=True))
