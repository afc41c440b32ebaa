"""The worker -> supervisor status protocol (qsmtp.gossip): encoding, framing
across reads, unknown kinds, and both ends on a real pipe."""

from __future__ import annotations

import contextlib
import os

import pytest

from qsmtp import gossip
from qsmtp.gossip import Decoder, Kind, Message


@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip(kind):
    record = gossip.encode(kind, 4_000_000_001)
    assert len(record) == gossip.RECORD.size == 5
    assert Decoder().feed(record) == [Message(kind, 4_000_000_001)]


def test_wire_format_is_fixed():
    # The bytes are an interface between two processes: pin them.
    assert gossip.encode(Kind.READY, 0x01020304) == b"R\x04\x03\x02\x01"
    assert {k.value for k in Kind} == {b"R", b"B", b"I"}


def test_records_split_across_reads():
    stream = b"".join(gossip.encode(k, pid) for k, pid in
                      [(Kind.READY, 10), (Kind.BUSY, 11), (Kind.IDLE, 12)])
    decoder, got = Decoder(), []
    for cut in range(0, len(stream), 3):  # 3-byte reads: every record is split
        got += decoder.feed(stream[cut:cut + 3])
    assert got == [Message(Kind.READY, 10), Message(Kind.BUSY, 11), Message(Kind.IDLE, 12)]
    assert decoder.feed(b"") == []


def test_unknown_kind_skipped_without_losing_the_framing():
    data = b"X" + (7).to_bytes(4, "little") + gossip.encode(Kind.IDLE, 8)
    assert Decoder().feed(data) == [Message(Kind.IDLE, 8)]


def test_send_on_a_real_pipe_and_a_full_one_never_blocks():
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        gossip.send(w, Kind.BUSY, os.getpid())
        assert Decoder().feed(os.read(r, 64)) == [Message(Kind.BUSY, os.getpid())]
        for chunk in (b"x" * 4096, b"x"):  # fill it to the last byte
            with contextlib.suppress(BlockingIOError):
                while True:
                    os.write(w, chunk)
        gossip.send(w, Kind.IDLE, 1)  # dropped, silently: it is gossip
        assert set(_drain(r)) == {ord("x")}
    finally:
        os.close(r)
        os.close(w)
    gossip.send(w, Kind.IDLE, 1)  # a closed fd (EBADF) is no crash either


def _drain(fd: int) -> bytes:
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    return data
