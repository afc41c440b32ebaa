"""spf, dkim and dmarc in a real `qsmtp serve`, against a real DNS server on
loopback (tests/helpers/dns_server.py) that publishes SPF records, a DKIM
key the test makes, and DMARC policies.  No mocked resolver: the plugins'
`nameservers`/`dns_port` point at the loopback server.  Clients are
smtplib sessions from different loopback source addresses.
"""

from __future__ import annotations

import smtplib

import dkim as dkimpy
import pytest

from helpers.dkim_keys import make_key
from helpers.dns_server import DnsServer
from helpers.server import Server, wait_for
from qsmtp.plugins.builtin._auth import hash_password


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("keys")
    return {"good": make_key(base / "good.pem"), "ours": make_key(base / "ours.pem")}


@pytest.fixture(scope="module")
def dns(keys):
    records = {
        "good.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "spoof.test": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
        "_dmarc.good.test": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@good.test"]},
        "_dmarc.ours.test": {"TXT": ["v=DMARC1; p=reject"]},
        "s1._domainkey.good.test": {"TXT": [keys["good"].txt]},
        "out._domainkey.ours.test": {"TXT": [keys["ours"].txt]},
    }
    with DnsServer(records) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, dns, keys):
    base = tmp_path_factory.mktemp("srv")
    users = base / "users"
    users.write_text(f"alice:{hash_password('wonderland', ln=10)}\n")
    resolver = (f'nameservers = ["{dns.host}"]\ndns_port = {dns.port}\n'
                f"dns_timeout = 2.0\n")
    extra = f"""
[relay]
clients = []
domains = ["example.test"]
[auth]
plaintext_services = ["smtp"]
[[plugins]]
name = "auth/file"
path = "{users}"
[[plugins]]
name = "spf"
{resolver}
[[plugins]]
name = "dkim"
sign = [{{ domain = "ours.test", selector = "out", key = "{keys['ours'].path}" }}]
{resolver}
[[plugins]]
name = "dmarc"
{resolver}
"""
    srv = Server(base, extra_toml=extra, children=2, idle_children=1)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        srv.cleanup()
    assert not srv.leaked_sysv()


def send(server, sender, message, source="127.0.0.1", login=None):
    """One transaction; returns (MAIL reply, DATA reply) codes and texts."""
    with smtplib.SMTP(server.host, server.port, source_address=(source, 0),
                      local_hostname="client.good.test", timeout=20) as client:
        client.ehlo()
        if login:
            client.login(*login)
        mail = client.mail(sender)
        if mail[0] != 250:
            return mail, None
        assert client.rcpt("bob@example.test")[0] == 250
        return mail, client.data(message)


def stored(server, marker: bytes) -> bytes:
    def find():
        for path in (server.maildir / "new").glob("*"):
            data = path.read_bytes()
            if marker in data:
                return data
        return None
    return wait_for(find, 5, what=f"message {marker!r} in the maildir")


def message(author: str, subject: str) -> bytes:
    return (f"From: <{author}>\r\nTo: <bob@example.test>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject}@x.test>\r\n"
            f"\r\nHello Bob.\r\n").encode()


def auth_results(data: bytes) -> str:
    head = data.split(b"\n\n", 1)[0].decode()
    start = head.index("Authentication-Results:")
    lines = [head[start:].split("\n")[0]]
    for line in head[start:].split("\n")[1:]:
        if not line.startswith("\t"):
            break
        lines.append(line.strip())
    return " ".join(lines)


def test_signed_aligned_mail_passes_all_three(server, keys):
    raw = message("ceo@good.test", "aligned")
    signature = dkimpy.sign(raw, b"s1", b"good.test", keys["good"].pem)
    mail, data = send(server, "ceo@good.test", signature + raw)
    assert mail[0] == 250 and data[0] == 250, data
    saved = stored(server, b"Subject: aligned")
    assert auth_results(saved).startswith(
        "Authentication-Results: mx.test; spf=pass smtp.mailfrom=good.test; "
        "dkim=pass header.d=good.test header.s=s1 header.b=")
    assert "dmarc=pass (p=reject dis=none) header.from=good.test" in auth_results(saved)
    assert b"\nReceived-SPF: Pass (mx.test: domain of good.test designates 127.0.0.1" in saved


def test_spf_fail_is_refused_at_mail(server):
    mail, _ = send(server, "ceo@good.test", b"", source="127.0.0.3")
    assert mail[0] == 550
    assert mail[1].startswith(b"5.7.23 SPF fail for good.test")


def test_forged_author_is_refused_by_dmarc_reject(server):
    # SPF passes for spoof.test, but nothing authenticates good.test
    mail, data = send(server, "x@spoof.test", message("ceo@good.test", "forged"))
    assert mail[0] == 250
    assert data[0] == 554 and data[1].startswith(b"5.7.26 DMARC policy of good.test")
    assert not any(b"Subject: forged" in p.read_bytes()
                   for p in (server.maildir / "new").glob("*"))


def test_tampered_signature_fails_dkim_and_dmarc(server, keys):
    raw = message("ceo@good.test", "tampered")
    signature = dkimpy.sign(raw, b"s1", b"good.test", keys["good"].pem)
    _, data = send(server, "x@spoof.test", signature + raw.replace(b"Hello", b"Bye"))
    assert data[0] == 554


def test_authenticated_mail_is_signed_and_verifies_on_the_way_in(server):
    mail, data = send(server, "alice@ours.test", message("alice@ours.test", "outbound"),
                      login=("alice", "wonderland"))
    assert mail[0] == 250 and data[0] == 250, data
    saved = stored(server, b"Subject: outbound")
    assert b"\nDKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=ours.test;" in saved
    assert b"Authentication-Results" not in saved  # our own user: not checked
    # Hand the signed message back in from outside, envelope unaligned:
    # only the DKIM signature our server made can satisfy ours.test's p=reject.
    resent = b"".join(line + b"\r\n" for line in saved.split(b"\n")
                      if not line.startswith((b"Return-Path:", b"Delivered-To:")))
    mail, data = send(server, "x@spoof.test", resent, source="127.0.0.1")
    assert mail[0] == 250 and data[0] == 250, data
    results = auth_results(stored(server, b"header.from=ours.test"))
    assert "dkim=pass header.d=ours.test" in results
    assert "dmarc=pass (p=reject dis=none) header.from=ours.test" in results


@pytest.mark.parametrize("plugins, reason", [
    ('[[plugins]]\nname = "dkim"\nsign = [{ domain = "a.test", selector = "s", '
     'key = "/nonexistent/k.pem" }]\n', "plugins.dkim.sign: /nonexistent/k.pem"),
    ('[[plugins]]\nname = "dmarc"\n[[plugins]]\nname = "spf"\n',
     "list spf before dmarc"),
    ('[[plugins]]\nname = "spf"\nfail_action = "bounce"\n',
     "plugins.spf.fail_action: must be one of"),
])
def test_bad_plugin_config_exits_78_with_one_line(tmp_path, plugins, reason):
    srv = Server(tmp_path, extra_toml=plugins)
    done = srv.run_once()
    assert done.returncode == 78, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and reason in lines[0], done.stderr
