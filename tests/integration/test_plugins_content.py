"""The content plugins against the real daemons: Debian's spamd (stock rules,
local tests only) and clamd (a signature database this test writes), both
started once per test session on loopback / unix sockets in /tmp, never the
system's.  Then end to end: a real `qsmtp serve` with spamassassin, clamav,
basicheaders and loop configured in [[plugins]], driven with smtplib.
"""

from __future__ import annotations

import base64
import email.utils
import re
import smtplib
import time

import pytest

from helpers.clamd import EICAR, Clamd
from helpers.fakes import session_with_spooled_body
from helpers.server import Server, free_port
from helpers.spamd import GTUBE, Spamd
from qsmtp import config as qconfig
from qsmtp.plugins.api import HookResult, Result
from qsmtp.plugins.builtin.clamav import ClamAV
from qsmtp.plugins.builtin.spamassassin import SpamAssassin
from qsmtp.smtp.replies import decide

CONFIG = qconfig.load(None, {"server.me": "mx.test"})
CUSTOM = b"qsmtp-test-malware-marker-7f3a9c"
EICAR_NAME = "Qsmtp.Test.EICAR.UNOFFICIAL"


@pytest.fixture(scope="session")
def spamd():
    daemon = Spamd()
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture(scope="session")
def clamd():
    # StreamMaxLength 1M: small enough to see clamd's own limit at work.
    daemon = Clamd({"Qsmtp.Test.EICAR": EICAR, "Qsmtp.Test.Custom": CUSTOM},
                   stream_max="1M")
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


def message(body: str | bytes, *, headers: str = "", subject: str = "test") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    head = (f"Received: from client.test by relay.test; {email.utils.formatdate()}\n"
            f"From: Sender <sender@client.test>\nTo: <rcpt@example.test>\n"
            f"Subject: {subject}\nDate: {email.utils.formatdate()}\n"
            f"Message-ID: <{time.monotonic_ns()}@client.test>\n{headers}\n")
    return head.encode() + body


def session(raw: bytes, threshold: int = 1 << 20):
    return session_with_spooled_body(CONFIG, raw, threshold)


def reply(result) -> bytes:
    return decide("data_post", HookResult.of(result), None).wire


def attachment(payload: bytes) -> bytes:
    return message(b"--B\nContent-Type: text/plain\n\nsee attached\n--B\n"
                   b"Content-Type: application/octet-stream\n"
                   b"Content-Transfer-Encoding: base64\n"
                   b"Content-Disposition: attachment; filename=\"t.com\"\n\n"
                   + base64.encodebytes(payload) + b"--B--\n",
                   headers="MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n")


# -- spamd ---------------------------------------------------------------------
def test_spamd_catches_gtube_over_tcp_and_unix_socket(spamd):
    for address in (f"127.0.0.1:{spamd.port}", f"unix:{spamd.socket_path}"):
        sess = session(message(f"Hello,\n{GTUBE}\n"))
        p = SpamAssassin(CONFIG, "spamassassin", {"address": address, "reject_score": 10})
        result = p.hook_data_post(sess)
        assert reply(result).startswith(b"550 5.7.1 Message refused as spam (score 10"), \
            (address, reply(result))
        notes = sess.transaction.notes["spamassassin"]
        assert notes["spam"] and "GTUBE" in notes["tests"] and notes["required"] == 5.0
        assert sess.transaction.added_headers[0] == "X-Spam-Flag: YES"


def test_spamd_passes_a_clean_message_with_tags(spamd):
    sess = session(message("Hi Bob,\n\nthe meeting moved to Thursday.\n\nAlice\n"))
    p = SpamAssassin(CONFIG, "spamassassin",
                     {"address": f"127.0.0.1:{spamd.port}", "reject_score": 10})
    assert p.hook_data_post(sess) is Result.DECLINED
    notes = sess.transaction.notes["spamassassin"]
    assert not notes["spam"] and notes["score"] < 5.0
    fields = dict(h.split(": ", 1) for h in sess.transaction.added_headers)
    assert "X-Spam-Flag" not in fields
    status = re.match(r"No, score=(-?\d+\.\d) required=5\.0 tests=", fields["X-Spam-Status"])
    assert status, fields["X-Spam-Status"]
    assert float(status.group(1)) == pytest.approx(notes["score"], abs=0.05)
    assert fields["X-Spam-Score"] == status.group(1)


def test_spamd_reads_a_spooled_message_in_full(spamd):
    """20 KB spooled to disk (past a 4 KiB threshold), streamed with its
    exact Content-length: spamd answers (a wrong length would make it wait
    or fail) and sees GTUBE."""
    filler = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 400)
    sess = session(message(f"{GTUBE}\n{filler}"), threshold=1 << 12)
    assert sess.transaction.body.spooled and sess.transaction.body.size > 20_000
    p = SpamAssassin(CONFIG, "spamassassin",
                     {"address": f"127.0.0.1:{spamd.port}", "max_size": 1 << 20})
    assert p.hook_data_post(sess) is Result.DECLINED  # no reject_score: tag only
    assert "GTUBE" in sess.transaction.notes["spamassassin"]["tests"]


# -- clamd ---------------------------------------------------------------------
@pytest.mark.parametrize("raw,name", [
    (message(EICAR + b"\n"), EICAR_NAME),
    (attachment(EICAR), EICAR_NAME),
    (attachment(b"MZ\0\0 junk " + CUSTOM + b" more junk"), "Qsmtp.Test.Custom.UNOFFICIAL"),
], ids=["eicar-inline", "eicar-base64-attachment", "custom-signature"])
def test_clamd_finds_the_test_signatures(clamd, raw, name):
    for address in (f"unix:{clamd.socket_path}", f"127.0.0.1:{clamd.port}"):
        sess = session(raw)
        result = ClamAV(CONFIG, "clamav", {"address": address}).hook_data_post(sess)
        assert reply(result) == f"552 5.7.1 Virus found: {name}\r\n".encode(), address
        assert sess.transaction.notes["clamav"] == {"virus": name}


def test_clamd_passes_a_clean_message(clamd):
    sess = session(attachment(b"just a harmless file\n" * 100))
    result = ClamAV(CONFIG, "clamav", {"address": clamd.socket_path}).hook_data_post(sess)
    assert result is Result.DECLINED
    assert sess.transaction.added_headers == ["X-Virus-Checked: Checked by ClamAV on mx.test"]


def test_clamd_stream_limit_passes_unscanned(clamd):
    """Over clamd's StreamMaxLength (1M here) but under our max_size: clamd
    refuses the stream; permanent, so not deferred, logged as unscanned."""
    sess = session(message(EICAR + b"\n" + b"z" * (1_500_000) + b"\n"), threshold=1 << 16)
    p = ClamAV(CONFIG, "clamav", {"address": clamd.socket_path, "max_size": 4 << 20})
    assert p.hook_data_post(sess) is Result.DECLINED
    assert "StreamMaxLength" in sess.transaction.notes["clamav"]["skipped"]


def test_hung_clamd_defers_or_passes_within_the_timeout(clamd):
    clamd.pause()
    try:
        for on_error, expected in (("defer", b"451 4.3.0 "), ("pass", None)):
            sess = session(message(EICAR + b"\n"))
            p = ClamAV(CONFIG, "clamav", {"address": clamd.socket_path, "timeout": 0.5,
                                          "on_error": on_error})
            started = time.monotonic()
            result = p.hook_data_post(sess)
            assert time.monotonic() - started < 3.0  # 0.5 s timeout, loaded CI
            if expected:
                assert reply(result).startswith(expected)
            else:
                assert result is Result.DECLINED
            assert "timed out" in sess.transaction.notes["clamav"]["error"]
    finally:
        clamd.resume()
    # and it works again afterwards
    sess = session(message(EICAR + b"\n"))
    result = ClamAV(CONFIG, "clamav", {"address": clamd.socket_path}).hook_data_post(sess)
    assert reply(result).startswith(b"552 ")


# -- end to end: a real qsmtp serve ---------------------------------------------
def plugins_toml(spamd_address: str, clamd_address: str, on_error=("defer", "defer")) -> str:
    return f"""
[relay]
clients = []
domains = ["example.test"]

[[plugins]]
name = "loop"
max_hops = 20

[[plugins]]
name = "basicheaders"
past_days = 30
future_days = 2

[[plugins]]
name = "spamassassin"
address = "{spamd_address}"
reject_score = 10
timeout = 10
on_error = "{on_error[0]}"

[[plugins]]
name = "clamav"
address = "{clamd_address}"
timeout = 10
on_error = "{on_error[1]}"
"""


def send(srv, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(srv.host, srv.port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("sender@client.test")
        client.rcpt("rcpt@example.test")
        return client.data(raw.replace(b"\n", b"\r\n"))


def stored(srv) -> list[bytes]:
    return [p.read_bytes() for p in sorted((srv.maildir / "new").iterdir())]


def test_end_to_end_through_qsmtp_serve(serve, spamd, clamd):
    srv = serve(hook_timeout=15, extra_toml=plugins_toml(
        f"127.0.0.1:{spamd.port}", f"unix:{clamd.socket_path}"))
    forged = "X-Spam-Flag: NO\nX-Spam-Status: No, score=-50\n"
    code, _ = send(srv, message("Hi Bob,\n\nlunch on Friday?\n\nAlice\n", headers=forged))
    assert code == 250
    [clean] = stored(srv)
    head = clean.split(b"\n\n", 1)[0]
    assert head.index(b"\nReceived: from client.test") < head.index(b"\nX-Spam-Status: No, ")
    assert b"\nX-Virus-Checked: Checked by ClamAV on mx.test\n" in head
    assert b"\nX-Old-Spam-Flag: NO\n" in head and b"\nX-Spam-Flag:" not in head

    refusals = {
        "gtube": (message(f"{GTUBE}\n"), 550, b"5.7.1 Message refused as spam"),
        "eicar": (attachment(EICAR), 552, f"5.7.1 Virus found: {EICAR_NAME}".encode()),
        "no-date": (b"From: a@client.test\nSubject: x\n\nhi\n", 554,
                    b"5.7.1 Message has no Date: header field"),
        "future": (message("hi\n").replace(
            email.utils.formatdate().encode(),
            email.utils.formatdate(time.time() + 10 * 86400).encode()),
            554, b"5.7.1 The Date: header field is too far in the future"),
        "loop": (message("hi\n", headers="Received: from a by b; x\n" * 21), 554,
                 b"5.4.6 Too many hops, this message is looping"),
    }
    for what, (raw, want_code, want_text) in refusals.items():
        code, text = send(srv, raw)
        assert (code, text.startswith(want_text)) == (want_code, True), (what, code, text)
    assert len(stored(srv)) == 1  # nothing refused was stored
    # Refusals at data_headers_end (basicheaders, loop) never reach the
    # scanners: spamd saw the clean, GTUBE and EICAR messages only.
    assert len(re.findall(r"\.\d+ (?:ham|spam) score=", srv.log())) == 3, srv.log()


def test_end_to_end_scanners_down(serve):
    """spamd unreachable with on_error=pass, clamd unreachable with
    on_error=defer: the message is not tagged by spamassassin and is
    deferred with 451 4.3.0 by clamav; nothing is stored."""
    srv = serve(hook_timeout=15, extra_toml=plugins_toml(
        f"127.0.0.1:{free_port()}", "unix:/nonexistent/clamd.sock", ("pass", "defer")))
    code, text = send(srv, message("hello\n"))
    assert (code, text) == (451, b"4.3.0 Content scanner unavailable, try again later")
    assert stored(srv) == []
    log = srv.log()
    assert "spamd 127.0.0.1:" in log and "passing unscanned" in log
    assert "clamd unix:/nonexistent/clamd.sock" in log and "deferring" in log


@pytest.mark.parametrize("plugin,option,reason", [
    ("spamassassin", 'timeout = 30',
     "plugins.spamassassin.timeout: must be below server.hook_timeout"),
    ("clamav", 'address = "clamd.ctl"', "plugins.clamav.address: expected host:port"),
    ("basicheaders", 'require = ["From:"]', "plugins.basicheaders.require: not a header field"),
    ("loop", 'max_hops = "many"', "plugins.loop.max_hops: must be int"),
])
def test_bad_plugin_options_exit_78_with_one_line(tmp_path, plugin, option, reason):
    srv = Server(tmp_path, hook_timeout=30,
                 extra_toml=f'\n[[plugins]]\nname = "{plugin}"\n{option}\n')
    done = srv.run_once()
    assert done.returncode == 78, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and reason in lines[0], done.stderr
