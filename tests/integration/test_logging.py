"""The log an admin diagnoses from, on a real `qsmtp serve` (stderr, as a
terminal or a file sees it; the journal side is in tests/system):

- the queue id of the 250 reply is in the message's log line, with the
  sizes labelled, one line per message;
- every refusal is one line: what was refused, the reply, and who decided
  (Postfix's `NOQUEUE: reject: RCPT from host[ip]: 550 5.7.1 ...` shape);
- a session id on every session line, no sd-daemon `<6>` prefixes;
- a client's control bytes, invalid UTF-8 and U+2028 never reach it raw.
"""

from __future__ import annotations

import re
import smtplib

import pytest

NOT_A_RELAY = '[relay]\nclients = []\ndomains = ["example.test"]\n'


@pytest.fixture
def plain_env(monkeypatch):
    # As from a terminal: not started by systemd.
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)


def _session_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if ": session " in line]


def test_queue_id_sizes_and_session_id_in_one_line(serve, plain_env):
    srv = serve(children=2, idle_children=1, extra_toml=NOT_A_RELAY)
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@client.test")
        client.rcpt("u@example.test")
        code, text = client.data(b"Subject: t\r\n\r\nhello\r\n")
    assert code == 250
    queue_id = re.search(rb"queued as (\S+)", text).group(1).decode()
    assert srv.stop() == 0
    log = srv.log()
    lines = [line for line in log.splitlines() if f"queued as {queue_id}:" in line]
    assert len(lines) == 1, log
    line = lines[0]
    assert "from=<a@client.test> nrcpt=1" in line
    assert re.search(r" size=\d+ wire_size=\d+$", line), line
    session_id = re.search(r": session (\w+): ", line).group(1)
    assert re.search(rf"session {session_id}: disconnect from unknown\[127\.0\.0\.1\] "
                     r"service=smtp helo=<client\.test> messages=1 result=accepted", log), log
    assert " accepted, " not in log and not re.search(r"(?m)^<\d>", log)
    assert not re.search(r"\b1 (workers|sessions)\b", log), log


def test_every_refusal_is_logged_with_what_reply_and_why(serve, plain_env):
    srv = serve(children=2, idle_children=1, extra_toml=NOT_A_RELAY)
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as client:
        client.ehlo("relay.probe.test")
        client.mail("spammer@foreign.test")
        code, _ = client.rcpt("victim@elsewhere.test")
        assert code == 550
        assert client.docmd("FOO")[0] == 500
        client.rset()
        client.mail("a@client.test")
        assert client.rcpt("u@example.test")[0] == 250
        code, _ = client.data(b"bare\nLF\r\n")  # bare LF in DATA: 554 5.6.0, not stored
        assert code == 554
    assert srv.stop() == 0
    log = srv.log()
    relay = [line for line in log.splitlines() if "reject: RCPT" in line]
    assert len(relay) == 1, log
    assert re.search(r": session \w+: \w+\.\d+: reject: RCPT from unknown\[127\.0\.0\.1\]: "
                     r"550 5\.7\.1 .*; from=<spammer@foreign\.test> to=<victim@elsewhere\.test> "
                     r"proto=ESMTP helo=<relay\.probe\.test> by=relay$", relay[0]), relay[0]
    assert re.search(r"\.1: reject: FOO from unknown\[127\.0\.0\.1\]: 500 5\.5\.2 "
                     r"Command unrecognized; from=<spammer@foreign\.test> cmd=<FOO> .* "
                     r"by=qsmtp$", log, re.M), log
    assert re.search(r"reject: DATA from .*: 554 5\.6\.0 .*from=<a@client\.test> "
                     r"proto=ESMTP helo=<relay\.probe\.test> by=qsmtp", log), log
    ids = {re.search(r": session (\w+): ", line).group(1) for line in _session_lines(log)}
    assert len(ids) == 1, ids  # one connection: one id on all its lines


HOSTILE = [b"\x1b[2J", b"\x0b\x0c", b"\x7f", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xae",
           b"\xff\xfe", b"\xed\xa0\x80"]


def test_hostile_bytes_never_reach_the_log_raw(serve, plain_env):
    srv = serve(children=2, idle_children=1, extra_toml=NOT_A_RELAY)
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as client:
        for bad in HOSTILE:  # raw bytes on the wire: smtplib's send() takes bytes
            for command in (b"EHLO a" + bad + b"b.test",
                            b"MAIL FROM:<x" + bad + b"@foreign.test> SMTPUTF8",
                            b"RCPT TO:<v" + bad + b"@elsewhere.test>", b"RSET"):
                client.send(command + b"\r\n")
                assert client.getreply()[0] < 600
    assert srv.stop() == 0
    raw = srv.log_path.read_bytes()
    text = raw.decode("utf-8")  # valid UTF-8 as a whole: nothing invalid got through
    for bad in HOSTILE:
        assert bad not in raw, bad
    lines = text.splitlines()
    assert all(line.isprintable() for line in lines), [ln for ln in lines if not ln.isprintable()]
    assert "\\x1B[2J" in text and "\\xFF\\xFE" in text  # escaped, still there to read
