"""clamav: zINSTREAM framing against an in-test fake clamd, reply parsing,
552 on a virus, size limits, fail closed / pass.  The real clamd is in
tests/integration/test_plugins_content.py."""

from __future__ import annotations

import hashlib
import struct
import tracemalloc

import pytest

from helpers.fake_daemon import FakeDaemon, recv_exact, scan_against_hung_daemon
from helpers.fakes import session_with_spooled_body
from helpers.server import free_port
from qsmtp import config as qconfig
from qsmtp.plugins.api import HookResult, PluginError, Result
from qsmtp.plugins.builtin.clamav import ClamAV, ClamdError, TooLarge, parse_reply
from qsmtp.smtp.replies import decide

CONFIG = qconfig.load(None, {"server.me": "mx.test"})
MESSAGE = b"From: a@x.test\nSubject: hi\n\nhello\n"


def plugin(**opts):
    return ClamAV(CONFIG, "clamav", opts)


def session(message: bytes = MESSAGE, threshold: int = 1 << 20):
    return session_with_spooled_body(CONFIG, message, threshold)


def read_stream(sock, sha=None):
    """Read a zINSTREAM request; -> (chunk sizes, data or its sha256)."""
    assert recv_exact(sock, 10) == b"zINSTREAM\0"
    sizes, data = [], bytearray()
    while True:
        (size,) = struct.unpack("!I", recv_exact(sock, 4))
        if size == 0:
            return sizes, (sha.hexdigest() if sha else bytes(data))
        sizes.append(size)
        chunk = recv_exact(sock, size)
        if sha:
            sha.update(chunk)
        else:
            data += chunk


def clamd_reply(reply: bytes):
    def handler(sock):
        seen = read_stream(sock)
        sock.sendall(reply)
        return seen
    return handler


def test_stream_framing_and_clean_header():
    sess = session()
    sess.transaction.prepend_header("X-Earlier", "1")
    with FakeDaemon(clamd_reply(b"stream: OK\0")) as fake:
        assert plugin(address=fake.address).hook_data_post(sess) is Result.DECLINED
    sizes, data = fake.seen[0]
    assert data == b"X-Earlier: 1\n" + MESSAGE
    assert all(0 < size <= 65536 for size in sizes)
    assert sess.transaction.added_headers[0] == "X-Virus-Checked: Checked by ClamAV on mx.test"
    assert sess.transaction.notes["clamav"] == {"clean": True}


def test_virus_is_refused_with_552():
    sess = session()
    with FakeDaemon(clamd_reply(b"stream: Eicar-Test-Signature FOUND\0"), unix=True) as fake:
        result = plugin(address=fake.address).hook_data_post(sess)
    assert isinstance(result, HookResult)
    assert decide("data_post", result, None).wire == (
        b"552 5.7.1 Virus found: Eicar-Test-Signature\r\n")
    assert sess.transaction.notes["clamav"] == {"virus": "Eicar-Test-Signature"}
    assert sess.transaction.added_headers == []


def test_no_header_option():
    sess = session()
    with FakeDaemon(clamd_reply(b"stream: OK\0")) as fake:
        plugin(address=fake.address, header=False).hook_data_post(sess)
    assert sess.transaction.added_headers == []


def test_parse_reply():
    assert parse_reply(b"stream: OK\0") is None
    assert parse_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0") == "Win.Test.EICAR_HDB-1"
    assert parse_reply(b"stream: Evil\r\nName FOUND\0") == "Evil??Name"  # reply-safe
    with pytest.raises(TooLarge):
        parse_reply(b"INSTREAM size limit exceeded. ERROR\0")
    with pytest.raises(ClamdError, match="Can't allocate memory ERROR"):
        parse_reply(b"stream: Can't allocate memory ERROR\0")
    with pytest.raises(ClamdError, match="no reply"):
        parse_reply(b"")
    with pytest.raises(ClamdError):
        parse_reply(b"UNKNOWN COMMAND\0")


def test_clamd_size_limit_passes_unscanned():
    sess = session()
    with FakeDaemon(clamd_reply(b"INSTREAM size limit exceeded. ERROR\0")) as fake:
        assert plugin(address=fake.address).hook_data_post(sess) is Result.DECLINED
    assert "StreamMaxLength" in sess.transaction.notes["clamav"]["skipped"]
    assert sess.transaction.added_headers == []  # not "checked"


def test_max_size_is_not_sent():
    sess = session(MESSAGE + b"y" * 5000)
    with FakeDaemon(clamd_reply(b"stream: OK\0")) as fake:
        assert plugin(address=fake.address, max_size=4096).hook_data_post(sess) \
            is Result.DECLINED
    assert fake.connections == 0
    assert "max_size 4096" in sess.transaction.notes["clamav"]["skipped"]


def test_scanner_error_defers_or_passes():
    for reply in (b"stream: lstat() failed ERROR\0", b""):
        sess = session()
        with FakeDaemon(clamd_reply(reply)) as fake:
            result = plugin(address=fake.address).hook_data_post(sess)
        assert decide("data_post", HookResult.of(result), None).wire.startswith(b"451 4.3.0 ")
    address = f"127.0.0.1:{free_port()}"
    sess = session()
    assert plugin(address=address, on_error="pass").hook_data_post(sess) is Result.DECLINED
    assert "ConnectionRefusedError" in sess.transaction.notes["clamav"]["error"]
    sess = session()
    assert plugin(address=address).hook_data_post(sess)[0] is Result.DENYSOFT


def test_hung_scanner_times_out():
    sess = session()
    result, took = scan_against_hung_daemon(
        lambda address: plugin(address=address, timeout=0.5).hook_data_post(sess), read_stream)
    assert result[0] is Result.DENYSOFT and 0.4 < took < 3.0


def test_spooled_message_is_streamed_not_loaded():
    line = b"an attachment, base64 or not, one line of it\n"
    big = MESSAGE + line * ((25 << 20) // len(line))
    sess = session(big, threshold=1 << 16)
    assert sess.transaction.body.spooled
    digest = hashlib.sha256(big).hexdigest()
    del big

    def hashing(sock):
        seen = read_stream(sock, hashlib.sha256())
        sock.sendall(b"stream: OK\0")
        return seen

    with FakeDaemon(hashing) as fake:
        p = plugin(address=fake.address, max_size=26 << 20)
        tracemalloc.start()
        result = p.hook_data_post(sess)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert result is Result.DECLINED and not fake.errors
    sizes, seen_digest = fake.seen[0]
    assert seen_digest == digest and max(sizes) <= 65536
    assert peak < 2 << 20, f"peak {peak} bytes while streaming 25 MiB"


@pytest.mark.parametrize("opts,key", [
    ({"address": "clamd.ctl"}, "address"),
    ({"address": "host:99999"}, "address"),
    ({"timeout": 45.0}, "timeout"),
    ({"max_size": -1}, "max_size"),
    ({"on_error": "accept"}, "on_error"),
    ({"header": "yes"}, "header"),
])
def test_bad_options_fail_at_load(opts, key):
    with pytest.raises(PluginError) as err:
        plugin(**opts)
    assert err.value.key == key


def test_default_address_is_debians_socket():
    assert plugin().sockaddr == "/run/clamav/clamd.ctl"
