"""queue/smtp helpers: DATA encoding and upstream parsing (no network)."""

from __future__ import annotations

import pytest

from helpers.fakes import message_body
from qsmtp.plugins.api import PluginError
from qsmtp.plugins.builtin.queue_smtp import parse_upstream, wire_chunks


class Txn:
    def __init__(self, message, headers=(), chunk=7):
        self.added_headers = list(headers)
        self.body = message_body(message, chunk)


def reference(message: bytes) -> bytes:
    """Plain line-by-line encoding to compare the chunked one against."""
    lines = message.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
@pytest.mark.parametrize("message", [
    b"Subject: x\n\nbody\n",
    b"Subject: x\n\n.\n..\n.x\nmid.dle\n.",
    b"Subject: x\n\n\n\n.\n",
    b"Subject: x\n\nno final newline",
])
def test_wire_chunks_match_line_by_line_encoding(message, chunk):
    out = b"".join(wire_chunks(Txn(message, ["Received: a\n\tb"], chunk)))
    assert out == b"Received: a\r\n\tb\r\n" + reference(message)
    assert b"\r\n.\r\n" not in b"\r\n" + out  # never an early end of data


@pytest.mark.parametrize("value, lmtp, expected", [
    ("127.0.0.1:25", False, ("127.0.0.1", 25)),
    ("[::1]:10025", False, ("::1", 10025)),
    ("mta.example.test:24", True, ("mta.example.test", 24)),
    ("unix:/run/dovecot/lmtp", True, ("/run/dovecot/lmtp", 0)),
])
def test_parse_upstream(value, lmtp, expected):
    assert parse_upstream(value, lmtp, "queue/x") == expected


@pytest.mark.parametrize("value, lmtp", [
    ("unix:/run/x", False), ("unix:rel", True), ("host", False), (":25", False),
    ("host:0", False), ("host:65536", True), ("host:2x", False)])
def test_parse_upstream_rejects(value, lmtp):
    with pytest.raises(PluginError):
        parse_upstream(value, lmtp, "queue/x")
