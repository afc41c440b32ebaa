"""The received message: LF line ends, dot-unstuffed, body spooled to disk
when large so a worker's memory does not grow with message size.

`header_block` is the header section including the blank line that ends it
(editable by plugins, e.g. headers.py renames fields); the rest is the body.
A message without a blank line is all header. A header section that grows
past HEADER_LIMIT without ending is not a header section: it becomes body
and `header_block` stays empty (bounded memory against garbage).
"""

from __future__ import annotations

# email.message too: the parser imports it on its first parse, in a worker.
# Not email.policy: it pulls in the header registry (~0.8 MiB in every
# process) for what BytesParser's default policy, compat32, already is.
import email.message
import email.parser
import os
import tempfile
from collections.abc import Iterator
from typing import IO

SPOOL_THRESHOLD = 1 << 18  # body bytes kept in memory before going to a file
# (256 KiB: 15 busy workers with big messages stay within a few MiB each)
HEADER_LIMIT = 1 << 18
CHUNK = 1 << 16
_IOV_MAX = 1024  # Linux's limit on the buffers of one writev


class MessageBody:
    def __init__(self, spool_threshold: int = SPOOL_THRESHOLD,
                 spool_dir: str | None = None):
        self.header_block = b""
        self.headers_complete = False
        self._head = bytearray()
        self._chunks: list[bytes] = []
        self._mem = 0
        self._file: IO[bytes] | None = None
        self._body_size = 0
        self._threshold = spool_threshold
        self._spool_dir = spool_dir
        # The OSError that stopped spooling (temp disk full, EIO): the body is
        # then incomplete and the engine answers 451 4.3.0 instead of queueing.
        self.spool_error: OSError | None = None

    # -- writing (engine) --------------------------------------------------
    def write(self, data: bytes) -> bool:
        """Append LF-ended message bytes. Returns True when this write
        completed the header section (the engine then runs data_headers_end)."""
        if self.headers_complete:
            self._write_body(data)
            return False
        start = max(len(self._head) - 1, 0)
        self._head += data
        if self._head.startswith(b"\n"):
            end = 0  # empty header section: the message starts with the blank line
        else:
            end = self._head.find(b"\n\n", start)
            if end < 0:
                if len(self._head) > HEADER_LIMIT:
                    self._complete_header(0)
                    return True
                return False
            end += 1
        self._complete_header(end + 1)
        return True

    def finish(self) -> bool:
        """End of message. Returns True when the header section only ends
        here (a message without a blank line)."""
        if self.headers_complete:
            return False
        self.header_block = bytes(self._head)
        self._head = bytearray()
        self.headers_complete = True
        return True

    def _complete_header(self, end: int) -> None:
        self.header_block = bytes(self._head[:end])
        rest = bytes(self._head[end:])
        self._head = bytearray()
        self.headers_complete = True
        if rest:
            self._write_body(rest)

    def _write_body(self, data: bytes) -> None:
        if not data:
            return
        self._body_size += len(data)
        if self.spool_error is not None:
            return  # only counted: the message is refused anyway
        try:
            if self._file is not None:
                self._file.write(data)
                return
            self._chunks.append(data)
            self._mem += len(data)
            if self._mem > self._threshold:
                # Open for the body's whole life (close() ends it): no `with`.
                self._file = tempfile.TemporaryFile(  # noqa: SIM115
                    prefix="qsmtp-", dir=self._spool_dir)
                self._file.writelines(self._chunks)
                self._chunks, self._mem = [], 0
        except OSError as exc:
            self.spool_error = exc
            self.close()

    # -- reading (plugins) -------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.header_block) + len(self._head) + self._body_size

    @property
    def spooled(self) -> bool:
        return self._file is not None

    def iter_chunks(self) -> Iterator[bytes]:
        """The whole message, LF line ends: header block, then body chunks."""
        if self.header_block:
            yield self.header_block
        if self._head:
            yield bytes(self._head)
        if self._file is None:
            yield from self._chunks
            return
        self._file.flush()
        self._file.seek(0)
        while True:
            chunk = self._file.read(CHUNK)
            if not chunk:
                break
            yield chunk
        self._file.seek(0, 2)

    def write_to(self, fd: int, prefix: bytes = b"") -> None:
        """`prefix`, then the whole message, into the file `fd`: what is in
        memory with one writev (no joined copy), a spooled body file to file
        by the kernel (os.sendfile), never read back through Python."""
        _write_parts(fd, [prefix, self.header_block, bytes(self._head), *self._chunks])
        if self._file is None:
            return
        self._file.flush()
        src, offset = self._file.fileno(), 0
        while offset < self._body_size:
            sent = os.sendfile(fd, src, offset, self._body_size - offset)
            if sent == 0:  # the spool file is shorter than what was written to it
                raise OSError(5, "spool file truncated")
            offset += sent

    def headers(self) -> email.message.Message:
        """The header section parsed (a fresh parse of header_block)."""
        parser = email.parser.BytesParser()  # policy: compat32, the default
        return parser.parsebytes(self.header_block, headersonly=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = []

    def __enter__(self) -> MessageBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_parts(fd: int, parts: list[bytes]) -> None:
    """All of `parts`, in order, with as few writev calls as the kernel
    allows (one, unless a write is short or there are > _IOV_MAX parts)."""
    pending: list[bytes | memoryview] = [part for part in parts if part]
    while pending:
        batch = pending if len(pending) <= _IOV_MAX else pending[:_IOV_MAX]
        written = os.writev(fd, batch)
        if batch is pending and written == sum(map(len, pending)):
            return  # the usual case: all of it in one call, no bookkeeping
        done = 0
        while done < len(pending) and written >= len(pending[done]):
            written -= len(pending[done])
            done += 1
        del pending[:done]
        if written:
            pending[0] = memoryview(pending[0])[written:]
