"""smtp/reader.py: line framing, long lines, bare CR/LF, DATA end detection
(at every chunk boundary), dot-unstuffing, limits."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsmtp.smtp.reader import (
    BARE,
    LINE,
    MAX_LINE,
    TOO_LONG,
    PeerClosed,
    Reader,
    ReadTimeout,
    TLSOnPlainPort,
)

# The Reader polls its socket's fd before each recv: the fakes' fd is one end
# of a real socket pair with a byte always waiting, so every poll is "ready".
_READY = socket.socketpair()
_READY[1].send(b"x")


@pytest.fixture(scope="module", autouse=True)
def _close_ready():
    yield
    for sock in _READY:
        sock.close()


class ChunkSock:
    """recv() returns the given chunks one by one, then EOF."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.recvs = 0

    def setblocking(self, flag):
        pass

    def fileno(self):
        return _READY[0].fileno()

    def recv(self, size):
        self.recvs += 1
        return self.chunks.pop(0) if self.chunks else b""


def reader(*chunks, flush=None):
    return Reader(ChunkSock(chunks), 5, flush or (lambda: None))


def read_message(rd, limit=10**9):
    out = []
    status = rd.read_data(out.append, limit)
    return b"".join(out), status


def test_lines_split_on_crlf_only():
    rd = reader(b"NOOP\r\nHELO a\r\n", b"QU", b"IT\r", b"\n")
    assert rd.read_command() == (LINE, b"NOOP")
    assert rd.read_command() == (LINE, b"HELO a")
    assert rd.read_command() == (LINE, b"QUIT")
    with pytest.raises(PeerClosed):
        rd.read_command()


@pytest.mark.parametrize("raw", [b"NOOP\nMAIL FROM:<a@b>\r\n", b"NOOP\rMAIL\r\n",
                                 b"\nNOOP\r\n", b"NOOP\r\r\n", b"\rNOOP\r\n"])
def test_bare_cr_or_lf_in_a_command_line(raw):
    rd = reader(raw, b"NOOP\r\n")
    kind, _ = rd.read_command()
    assert kind == BARE
    assert rd.read_command() == (LINE, b"NOOP")


def test_line_of_exactly_512_octets_is_fine():
    line = b"x" * (MAX_LINE - 2)
    assert reader(line + b"\r\n").read_command() == (LINE, line)


@pytest.mark.parametrize("split", [1, 100, 511, 512, 513, 600])
def test_long_line_is_discarded_to_its_crlf(split):
    raw = b"y" * (MAX_LINE - 1) + b"\r\n" + b"NOOP\r\n"
    rd = reader(raw[:split], raw[split:])
    kind, head = rd.read_command()
    assert kind == TOO_LONG and len(head) == MAX_LINE
    assert rd.read_command() == (LINE, b"NOOP")


def test_very_long_line_with_crlf_split_across_recvs():
    chunks = [b"z" * 65536] * 3 + [b"z\r", b"\nNOOP\r\n"]
    rd = reader(*chunks)
    assert rd.read_command()[0] == TOO_LONG
    assert rd.read_command() == (LINE, b"NOOP")
    assert len(rd.buf) == 0


def test_flush_is_called_before_blocking_only():
    calls = []
    rd = Reader(ChunkSock([b"A\r\nB\r\n", b"C\r\n"]), 5, lambda: calls.append(1))
    rd.read_command()
    assert len(calls) == 1  # before the first recv
    rd.read_command()  # buffered: no flush, no recv
    assert len(calls) == 1
    rd.read_command()
    assert len(calls) == 2


def test_tls_hello_on_first_byte():
    rd = reader(b"\x16\x03\x01\x00")
    rd.watch_tls_hello = True
    with pytest.raises(TLSOnPlainPort):
        rd.read_command()


def test_timeout_for_a_complete_line():
    left, right = socket.socketpair()
    try:
        rd = Reader(left, 0.2, lambda: None)
        right.sendall(b"NOO")
        with pytest.raises(ReadTimeout):
            rd.read_command()
    finally:
        left.close()
        right.close()


MESSAGE = b"Subject: x\r\n\r\n..dot\r\nline\r\n.\r\nNOOP\r\n"


@pytest.mark.parametrize("split", range(1, len(MESSAGE)))
def test_data_end_found_at_every_split(split):
    rd = reader(MESSAGE[:split], MESSAGE[split:])
    body, status = read_message(rd)
    assert body == b"Subject: x\n\n.dot\nline\n"
    assert not status.bare_line_end and not status.too_big
    assert rd.read_command() == (LINE, b"NOOP")


@pytest.mark.parametrize("split", range(1, 5))
def test_data_end_right_at_start(split):
    raw = b".\r\nQUIT\r\n"
    rd = reader(raw[:split], raw[split:])
    body, status = read_message(rd)
    assert body == b"" and status.wire_size == 0
    assert rd.read_command() == (LINE, b"QUIT")


def test_data_in_single_byte_chunks():
    rd = reader(*[MESSAGE[i:i + 1] for i in range(len(MESSAGE))])
    body, _ = read_message(rd)
    assert body == b"Subject: x\n\n.dot\nline\n"


VECTORS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b".\r\r\n",
           b"\r\n.\r\r\n", b"\r\n\n.\n"]


@pytest.mark.parametrize("vector", VECTORS)
def test_smuggling_vectors_never_end_data(vector):
    raw = b"a\r\nb" + vector + b"MAIL FROM:<e@vil>\r\n.\r\nNOOP\r\n"
    for split in range(1, len(raw)):
        rd = reader(raw[:split], raw[split:])
        _, status = read_message(rd)
        assert status.bare_line_end, (vector, split)
        assert rd.read_command() == (LINE, b"NOOP"), (vector, split)


def test_real_crlf_dot_crlf_after_a_bare_lf_does_end_data():
    # "b\n" is a line with a bare LF; the CRLF.CRLF that follows is real.
    rd = reader(b"a\r\nb\n\r\n.\r\nNOOP\r\n")
    _, status = read_message(rd)
    assert status.bare_line_end
    assert rd.read_command() == (LINE, b"NOOP")


def test_bare_lf_at_start_of_data():
    rd = reader(b"\n.\n\r\n.\r\nNOOP\r\n")
    _, status = read_message(rd)
    assert status.bare_line_end
    assert rd.read_command() == (LINE, b"NOOP")


def test_nothing_reaches_sink_after_bare_line_end():
    rd = reader(b"a\r\n", b"b\nc\r\n", b"d\r\n.\r\n")
    body, status = read_message(rd)
    assert status.bare_line_end and body == b"a\n"


def test_too_big_is_read_to_the_end():
    rd = reader(b"x" * 50 + b"\r\n", b"y" * 50 + b"\r\n.\r\nNOOP\r\n")
    _, status = read_message(rd, limit=60)
    assert status.too_big and status.wire_size == 104
    assert rd.read_command() == (LINE, b"NOOP")


def test_long_data_line_without_crlf_is_bounded():
    big = b"q" * (3 << 20)
    chunks = [big[i:i + 65536] for i in range(0, len(big), 65536)] + [b"\r\n.\r\n"]
    rd = reader(*chunks)
    seen = []
    status = rd.read_data(lambda d: seen.append(len(d)), 10**9)
    assert sum(seen) == len(big) + 1 and not status.bare_line_end
    assert max(seen) <= (1 << 20) + 65536


def test_long_data_line_keeps_line_start_state():
    # The piece after a forced cut is not at a line start: its dot stays.
    chunks = [b"q" * ((1 << 20) + 1), b".x\r\n.\r\n"]
    body, _ = read_message(reader(*chunks))
    assert body.endswith(b"q.x\n")


def test_data_timeout():
    left, right = socket.socketpair()
    try:
        rd = Reader(left, 0.2, lambda: None)
        right.sendall(b"partial\r\n")
        with pytest.raises(ReadTimeout):
            read_message(rd)
    finally:
        left.close()
        right.close()


def test_send_waits_while_the_socket_buffer_is_full():
    """Non-blocking send: partial writes, then a poll for room, in order."""
    left, right = socket.socketpair()
    payload = b"".join(b"%08d" % i for i in range(1 << 20))  # 8 MiB, far above the buffer
    got = bytearray()

    def drain():
        while len(got) < len(payload):
            time.sleep(0.001)
            got.extend(right.recv(1 << 16))

    reader_thread = threading.Thread(target=drain)
    reader_thread.start()
    try:
        Reader(left, 5, lambda: None).send(payload, 10)
        reader_thread.join(20)
        assert bytes(got) == payload
    finally:
        left.close()
        right.close()


def test_send_times_out_when_the_peer_never_reads():
    left, right = socket.socketpair()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            Reader(left, 5, lambda: None).send(b"x" * (16 << 20), 0.2)
        assert time.monotonic() - started < 3
    finally:
        left.close()
        right.close()


_LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.one_of(_LINE, st.sampled_from([b".", b"..", b".x", b""])), max_size=30),
       cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=20))
def test_any_clean_message_round_trips_through_any_chunking(lines, cuts):
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\nQUIT\r\n"
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(wire[pos:pos + cut])
        pos += cut
    chunks.append(wire[pos:])
    rd = reader(*[c for c in chunks if c])
    body, status = read_message(rd)
    assert body == b"".join(line + b"\n" for line in lines)
    assert not status.bare_line_end
    assert rd.read_command() == (LINE, b"QUIT")
