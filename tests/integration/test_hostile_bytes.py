"""Hostile bytes and internationalised domains against a real `qsmtp serve`.

A raw-socket client sends HELO arguments and paths with control characters,
invalid UTF-8 and IDNA look-alikes; the server refuses them with the RFC's
reply, the session stays usable, and the stored message and the log carry
no raw control byte. The configured domain is a U-label; the client sends
its A-label, and the KELVIN SIGN look-alike of another configured domain.
"""

from __future__ import annotations

import re

import pytest

from helpers.server import connect

RELAY = '[relay]\nclients = []\ndomains = ["straße.test", "kiwi.test"]\n'
# Bytes no header or log line may hold raw: C0 controls except TAB/LF, DEL,
# C1 (as UTF-8), U+2028/2029 (as UTF-8), and any byte that is not UTF-8.
_RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


def command(sock, line: bytes) -> bytes:
    """Send one command line; the last line of its reply."""
    sock.sendall(line + b"\r\n")
    reader = sock.makefile("rb")  # one reply: the server sends nothing unasked
    while True:
        reply = reader.readline()
        assert reply.endswith(b"\r\n"), reply
        if reply[3:4] != b"-":
            return reply


@pytest.mark.parametrize("helo", [
    b"a\x1b]0;owned\x07.test", b"a\x0bb.test", b"a\x0cb.test", b"a\x7fb.test",
    b"a\xc2\x85b.test", b"a\xe2\x80\xa8b.test", b"a\xff\xfeb.test",
])
def test_hostile_helo_is_refused_live(serve, helo):
    srv = serve(extra_toml=RELAY)
    sock, banner = connect(srv.port)
    with sock:
        assert banner.startswith(b"220")
        assert command(sock, b"EHLO " + helo).startswith(b"501 5.5.4 ")
        assert command(sock, b"HELO " + helo).startswith(b"501 5.5.4 ")
        assert command(sock, b"MAIL FROM:<a@client.test>").startswith(b"503 5.5.1 ")
        assert command(sock, b"EHLO client.test").startswith(b"250 ")
        assert command(sock, b"QUIT").startswith(b"221 ")
    assert _RAW_CONTROL.search(srv.log().encode("utf-8", "surrogateescape")) is None


def test_hostile_paths_and_idna_live(serve):
    srv = serve(extra_toml=RELAY)
    sock, _ = connect(srv.port)
    with sock:
        assert command(sock, b"EHLO client.test").startswith(b"250 ")
        for path in (b"<j\xff\xfe@client.test>", b"<j\xed\xa0\x80@client.test>",
                     b"<j\xc2\x85@client.test>", b"<j\x1b@client.test>"):
            reply = command(sock, b"MAIL FROM:" + path + b" SMTPUTF8")
            assert reply.startswith(b"553 5.1.7 "), (path, reply)
        kelvin = "\u212aiwi.test".encode()
        assert command(sock, b"MAIL FROM:<a@" + kelvin + b"> SMTPUTF8").startswith(b"553 5.1.8 ")
        assert command(sock, "MAIL FROM:<jörg@client.test> SMTPUTF8".encode()) \
            .startswith(b"250 2.1.0 ")
        reply = command(sock, b"RCPT TO:<u\xe2\x80\xa8@xn--strae-oqa.test>")
        assert reply.startswith(b"553 5.1.3 ")
        assert command(sock, b"RCPT TO:<u@" + kelvin + b">").startswith(b"553 5.1.3 ")
        assert command(sock, b"RCPT TO:<u@strasse.test>").startswith(b"550 5.7.1 ")
        # The A-label of the configured U-label domain is the same domain.
        assert command(sock, b"RCPT TO:<u@xn--strae-oqa.test>").startswith(b"250 2.1.5 ")
        assert command(sock, b"DATA").startswith(b"354 ")
        assert command(sock, b"Subject: hi\r\n\r\nbody\r\n.").startswith(b"250 ")
        assert command(sock, b"QUIT").startswith(b"221 ")
    files = list((srv.maildir / "new").iterdir())
    assert len(files) == 1
    head = files[0].read_bytes().split(b"\n\n", 1)[0]
    head.decode("utf-8")  # valid UTF-8
    assert _RAW_CONTROL.search(head) is None
    assert b"Return-Path: <j\xc3\xb6rg@client.test>\n" in head
    assert b"Delivered-To: <u@xn--strae-oqa.test>\n" in head
    assert b"Received: from client.test " in head
    assert _RAW_CONTROL.search(srv.log().encode("utf-8", "surrogateescape")) is None


def test_configured_domain_outside_idna2008_exits_78(serve):
    srv = serve(start=False, extra_toml='[relay]\ndomains = ["\u212aiwi.test"]\n')
    result = srv.run_once()
    assert result.returncode == 78, result
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "relay.domains" in lines[0] and "Traceback" not in lines[0]
