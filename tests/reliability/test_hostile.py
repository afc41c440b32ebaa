"""Hostile input, compact live checks (the per-transcript versions are in
tests/protocol): SMTP smuggling, STARTTLS command injection, AUTH before TLS,
HTTP on the SMTP port, a TLS handshake on the plain port, and a PROXY header
from a host nobody allowed (qsmtp does not implement PROXY: it must be an
unknown command, 500, and never change who the client is)."""

from __future__ import annotations

import socket
import ssl

import pytest

from reltools import RELAY_TOML, TALLY, Raw, code, maildir_files

INJECTED = (b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n")
VECTORS = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r",
           b"\r\n.\x00\r\n", b"\r\n \r\n.\n"]


@pytest.fixture
def server(fleet, tls_toml):
    return fleet(children=4, idle_children=2, max_from_ip=0,
                 extra_toml=RELAY_TOML + tls_toml)


def start(srv, source: str | None = None) -> Raw:
    client = Raw(srv.port, source=source)
    assert code(client.reply()) == 220
    return client


def test_smuggling_vectors_live(server):
    for vector in VECTORS:
        before = set(maildir_files(server.maildir)["new"])
        with start(server) as client:
            client.cmd("EHLO smuggle.test")
            client.cmd("MAIL FROM:<a@outside.test>")
            client.cmd("RCPT TO:<user@example.test>")
            assert code(client.cmd("DATA")) == 354
            client.send(b"Subject: carrier\r\n\r\nline" + vector + INJECTED + b"\r\n.\r\n"
                        + b"QUIT\r\n")
            final, bye = client.reply(), client.reply()
            assert code(final) in (250, 554), (vector, final)
            assert code(bye) == 221, (vector, final, bye)  # nothing answered in between
        new = set(maildir_files(server.maildir)["new"]) - before
        assert len(new) <= 1, (vector, new)
        for name in new:  # accepted only as one message holding the text
            stored = (server.maildir / "new" / name).read_bytes()
            assert b"Subject: carrier" in stored and b"Delivered-To: <victim" not in stored
        TALLY.add("hostile.smuggling_vectors")


def test_starttls_injection_discarded(server):
    with start(server) as client:
        assert b"STARTTLS" in client.cmd("EHLO inject.test")
        client.send(b"STARTTLS\r\nMAIL FROM:<inject@x.test>\r\n")  # one packet
        assert code(client.reply()) == 220
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        client.sock = context.wrap_socket(client.sock, server_hostname="localhost")
        client.buf = b""
        ehlo = client.cmd("EHLO inject.test")
        assert ehlo.startswith(b"250-"), ehlo  # not a reply to the injected MAIL
        assert code(client.cmd("MAIL FROM:<a@outside.test>")) == 250  # no MAIL pending
        assert code(client.cmd("QUIT")) == 221
    TALLY.add("hostile.starttls_injection")


def test_auth_before_tls_refused(server):
    with start(server, source="127.0.0.2") as client:
        ehlo = client.cmd("EHLO auth.test")
        assert b"AUTH" not in ehlo
        reply = client.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
        assert 500 <= code(reply) < 600, reply
        assert code(client.cmd("MAIL FROM:<a@outside.test>")) == 250
        assert code(client.cmd("RCPT TO:<u@foreign.test>")) == 550  # still no relay
    TALLY.add("hostile.auth_before_tls")


def test_http_request_on_smtp_port(server):
    with start(server) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: mx.test\r\n\r\n")
        reply = client.reply()
        assert code(reply) == 500, reply
        assert client.closed()
    assert server.log().count("spoke HTTP") == 1
    TALLY.add("hostile.http")


def test_tls_handshake_on_plain_port(server):
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (pytest.raises((ssl.SSLError, OSError)),
          context.wrap_socket(raw, server_hostname="localhost") as tls):
        tls.recv(100)
    raw.close()
    with start(server) as client:  # the service is fine
        assert code(client.cmd("NOOP")) == 250
    TALLY.add("hostile.tls_on_plain")


def test_proxy_header_from_outsider_not_trusted(server):
    with start(server, source="127.0.0.2") as client:
        reply = client.cmd("PROXY TCP4 127.0.0.1 127.0.0.1 40000 25")
        assert reply.startswith(b"500 5.5."), reply
        client.cmd("EHLO proxy.test")
        client.cmd("MAIL FROM:<a@outside.test>")
        assert code(client.cmd("RCPT TO:<u@foreign.test>")) == 550  # not 127.0.0.1
        assert code(client.cmd("RCPT TO:<user@example.test>")) == 250
        assert code(client.cmd("DATA")) == 354
        assert code(client.cmd(b"Subject: proxy\r\n\r\nx\r\n.\r\n")) == 250
    (name,) = maildir_files(server.maildir)["new"]
    stored = (server.maildir / "new" / name).read_bytes()
    assert b"[127.0.0.2]" in stored and b"[127.0.0.1]" not in stored
    TALLY.add("hostile.proxy_header")
