"""dkim: signing with a key the test makes, verifying against the loopback
DNS server that publishes it (tests/helpers/dns_server, dkim_keys)."""

from __future__ import annotations

import authres
import dkim as dkimpy
import pytest

from helpers.dkim_keys import make_key
from helpers.dns_server import DnsServer
from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.dkim import Dkim

CONFIG = qconfig.load(None, {"server.me": "mx.ours.test"})
MESSAGE = (b"From: Alice <alice@example.test>\nTo: bob@else.test\nSubject: hi\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@example.test>\n\n"
           b"Hello\n\nlast line  \n")


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return make_key(tmp_path_factory.mktemp("dkim") / "s1.pem")


@pytest.fixture(scope="module")
def dns(key):
    with DnsServer({"s1._domainkey.example.test": {"TXT": [key.txt]}}) as server:
        yield server


def plugin(dns, key, **opts):
    sign = [{"domain": "example.test", "selector": "s1", "key": str(key.path)}]
    return Dkim(CONFIG, "dkim", {"sign": sign, **dns.options(), **opts})


def signed(p, message=MESSAGE, **attrs) -> bytes:
    """The message as it would be stored: our added headers, then the message."""
    sess = make_session(CONFIG, message=message, auth_user="alice", **attrs)
    assert p.hook_data_post(sess) is None
    added = sess.transaction.added_headers
    return ("\n".join(added) + "\n").encode() + message if added else message


def verify(p, message, **attrs):
    sess = make_session(CONFIG, message=message, **attrs)
    return p.hook_data_post(sess), sess.transaction


def test_sign_then_verify_round_trip(dns, key):
    p = plugin(dns, key)
    message = signed(p)
    assert message.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; "
                              b"d=example.test;")
    # dkimpy's own verify, on the CRLF wire form, with the key we made
    assert dkimpy.verify(message.replace(b"\n", b"\r\n"),
                         dnsfunc=key.dnsfunc("s1._domainkey.example.test"))
    result, txn = verify(p, message)
    assert result is None
    [verdict] = txn.notes["dkim"]
    assert (verdict.result, verdict.domain, verdict.selector) == ("pass", "example.test", "s1")
    header = txn.added_headers[0]
    parsed = authres.all_features().parse(" ".join(header.split()))
    [clause] = parsed.results
    assert (clause.method, clause.result, clause.header_d, clause.header_s) == (
        "dkim", "pass", "example.test", "s1")
    assert len(clause.header_b) == 8 and clause.header_b in message.decode()
    assert ("s1._domainkey.example.test", "TXT", "udp") in dns.queries


def test_signed_headers_are_those_present(dns, key):
    fields = dkimpy.util.parse_tag_value(signed(plugin(dns, key)).split(b"\n\n")[0]
                                         .split(b": ", 1)[1].replace(b"\n", b""))
    signed_names = fields[b"h"].replace(b" ", b"").split(b":")
    assert signed_names == [b"from", b"subject", b"date", b"message-id", b"to"]


def test_tampered_body_fails_and_can_be_refused(dns, key):
    message = signed(plugin(dns, key)).replace(b"Hello", b"Hellx")
    result, txn = verify(plugin(dns, key), message)
    assert result is Result.DECLINED  # default fail_action: note
    assert txn.notes["dkim"][0].result == "fail"
    assert "dkim=fail (body hash mismatch)" in txn.added_headers[0]
    result, _ = verify(plugin(dns, key, fail_action="deny"), message)
    assert result == (Result.DENY, "5.7.20 DKIM signature did not verify")


def test_tampered_header_fails(dns, key):
    message = signed(plugin(dns, key)).replace(b"Subject: hi", b"Subject: hi!")
    _, txn = verify(plugin(dns, key), message)
    assert txn.notes["dkim"][0].result == "fail"


def test_unpublished_selector_is_permerror(dns, key):
    message = signed(plugin(dns, key)).replace(b"s=s1;", b"s=s9;")
    result, txn = verify(plugin(dns, key, fail_action="deny"), message)
    verdict = txn.notes["dkim"][0]
    assert (verdict.result, verdict.selector) == ("permerror", "s9")
    assert result[0] is Result.DENY


def test_unsigned_message_is_none(dns, key):
    result, txn = verify(plugin(dns, key, fail_action="deny"), MESSAGE)
    assert result is None and txn.notes["dkim"] == []
    assert txn.added_headers == ["Authentication-Results: mx.ours.test;\n\tdkim=none"]


def test_key_lookup_servfail_is_temperror(key, tmp_path):
    with DnsServer({}, servfail=["s1._domainkey.example.test"]) as broken:
        p = plugin(broken, key, temperror_action="denysoft")
        message = signed(p)
        result, txn = verify(p, message)
    assert txn.notes["dkim"][0].result == "temperror"
    assert result == (Result.DENYSOFT, "4.7.5 DKIM key lookup failed, try later")


def test_signing_picks_the_most_specific_domain_or_none(dns, key, tmp_path):
    other = make_key(tmp_path / "sub.pem", bits=1024)
    p = Dkim(CONFIG, "dkim", {**dns.options(), "sign": [
        {"domain": "example.test", "selector": "s1", "key": str(key.path)},
        {"domain": "lists.example.test", "selector": "l1", "key": str(other.path)}]})
    sub = MESSAGE.replace(b"alice@example.test", b"alice@news.lists.example.test")
    assert b"d=lists.example.test; i=@lists.example.test; q=dns/txt; s=l1;" in \
        signed(p, sub).replace(b"\n", b"")
    assert signed(p, MESSAGE.replace(b"example.test>", b"elsewhere.test>")).startswith(b"From:")
    two_froms = b"From: x@example.test\n" + MESSAGE
    assert signed(p, two_froms) == two_froms  # ambiguous author: not signed


def test_relay_clients_signed_only_when_asked(dns, key):
    sess = make_session(CONFIG, message=MESSAGE, relay_client=True)
    plugin(dns, key).hook_data_post(sess)
    assert sess.transaction.added_headers == []  # neither signed nor verified
    sess = make_session(CONFIG, message=MESSAGE, relay_client=True)
    plugin(dns, key, sign_relay_clients=True).hook_data_post(sess)
    assert sess.transaction.added_headers[0].startswith("DKIM-Signature: ")


@pytest.mark.parametrize("opts", [
    {"sign": [{"domain": "example.test", "selector": "s1"}]},
    {"sign": [{"domain": "example.test", "selector": "s1", "key": "/nonexistent.pem"}]},
    {"sign": ["example.test"]},
    {"max_signatures": 0}, {"sign_headers": ["subject"]},
    {"canonicalization": "loose/loose"}, {"nameservers": ["ns.test"]}])
def test_bad_options(dns, key, opts):
    with pytest.raises(PluginError):
        plugin(dns, key, **opts)


def test_garbage_key_file_fails_at_load(dns, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PluginError, match="not an RSA private key"):
        Dkim(CONFIG, "dkim", {"sign": [{"domain": "a.test", "selector": "s",
                                        "key": str(bad)}], **dns.options()})


@pytest.mark.parametrize("message, result", [
    (b"no colon in this header line\n\nbody\n", "none"),  # dkimpy can't parse it
    (b"DKIM-Signature: garbage\nno colon either\n\nbody\n", "permerror"),
    (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test\nFrom: a@example.test\n\nb\n",
     "permerror"),  # required tags missing
    (b"From: <a@example.test>\nDKIM-Signature: v=1; a=rsa-sha999; d=example.test; s=s1; "
     b"h=from; bh=AA==; b=AA==\n\nb\n", "permerror"),
])
def test_malformed_messages_and_signatures_never_raise(dns, key, message, result):
    hook_result, txn = verify(plugin(dns, key), message)
    assert hook_result in (None, Result.DECLINED)
    assert f"dkim={result}" in txn.added_headers[0]
    sess = make_session(CONFIG, message=message, auth_user="alice")
    assert plugin(dns, key).hook_data_post(sess) is None  # signing: skipped, no error
