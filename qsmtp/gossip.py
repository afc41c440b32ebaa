"""The worker -> supervisor status protocol (Postfix's master_proto.h model):
the message kinds, their encoding, and both ends of the shared "wake" pipe.

One record is 1 byte of kind + the worker's pid (4 bytes, little-endian).
5 bytes is far below PIPE_BUF, so every write is atomic: records from many
workers never interleave on the one pipe they share.

It is gossip, not the truth: a full pipe drops a record (the sender never
blocks), and the supervisor uses it only to act sooner (spawn a spare when a
worker goes busy, count a worker ready).  The registry and waitpid are what
the supervisor trusts.
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct
from dataclasses import dataclass

RECORD = struct.Struct("<cI")  # kind, pid


class Kind(enum.Enum):
    READY = b"R"  # reached its accept loop: the code path up to accept() works
    BUSY = b"B"   # accepted a connection, and spares fell below the idle target
    IDLE = b"I"   # a worker's first session ended: the path through a session works
    # (sent once per worker: BootLoopThrottle needs no more, and each record
    # costs a write here and a wake-up in the supervisor)


@dataclass(frozen=True)
class Message:
    kind: Kind
    pid: int


def encode(kind: Kind, pid: int) -> bytes:
    return RECORD.pack(kind.value, pid)


def send(fd: int, kind: Kind, pid: int) -> None:
    """Worker side: tell the supervisor, never block, never fail."""
    # BlockingIOError (pipe full) included: it is gossip.
    with contextlib.suppress(OSError):
        os.write(fd, encode(kind, pid))


class Decoder:
    """Supervisor side: bytes read from the pipe -> Messages.  Keeps a partial
    record for the next feed (cannot happen with atomic writes; costs nothing)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Message]:
        data = self._pending + data
        usable = len(data) - len(data) % RECORD.size
        self._pending = data[usable:]
        known = {kind.value: kind for kind in Kind}
        # A kind not of ours is skipped as a whole record: the framing holds.
        return [Message(known[kind], pid) for kind, pid in RECORD.iter_unpack(data[:usable])
                if kind in known]
