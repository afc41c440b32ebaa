"""The connection's socket, owned here alone: buffered reading of SMTP
command lines and DATA framing, sending, the STARTTLS upgrade, closing.

Line-end rules (docs/REFERENCE.md "Precise rules", SMTP smuggling): a line ends ONLY at
CRLF. A lone CR or LF never ends a line; a command line containing one is
returned as BARE (the engine answers 500 5.5.2 without executing it). DATA
ends ONLY at a line that is exactly "." (CRLF.CRLF in the stream, or ".CRLF"
right after the DATA command); a bare CR or LF anywhere in the message marks
it bad, but reading goes on to the real end.

Everything works on whole buffers with bytes.find / count / replace: no
per-byte Python loops. One recv() per chunk; `flush` is called before every
recv that might block, which is what makes PIPELINING replies go out in one
send per group of commands.

The socket is non-blocking for the whole session and waits go through a
poll object of our own: socket.settimeout() costs an ioctl(FIONBIO) per
call and a timed send() polls before it writes, so per-call timeouts made
~3 syscalls of every read and send.  Now a read is poll + recv and a send
is one send (poll only when the kernel's buffer is full).
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

MAX_LINE = 512  # octets, including CRLF (RFC 5321 4.5.3.1.4)
MAX_AUTH_LINE = 12288  # AUTH command and SASL responses (RFC 4954 4)
RECV_SIZE = 65536
# Longest run of DATA bytes without a CRLF kept in memory before it is
# handed on (the line-start state is tracked, so this is safe).
MAX_DATA_PENDING = 1 << 20
STOP_POLL = 1.0  # seconds between control.stopping checks while idle

LINE, TOO_LONG, BARE = 0, 1, 2
_TLS_HANDSHAKE = 0x16


class PeerClosed(Exception):
    """The client closed the connection (or it broke)."""


class ReadTimeout(Exception):
    """No complete command line / no DATA bytes within the timeout, or (the
    subclasses) a client too slow on average: all end in 421 4.4.2."""

    text = "Timeout"


class DataTooSlow(ReadTimeout):
    """The DATA transfer averaged below min_data_rate past `timeout`."""

    text = "Data rate too low"


class SessionTooLong(ReadTimeout):
    """The session passed max_session_time."""

    text = "Session too long"


class StopRequested(Exception):
    """The worker is stopping and we were idle between commands: the one
    way a stop ends a session (the engine answers 421 4.3.2)."""


class TLSOnPlainPort(Exception):
    """The first byte of the session is a TLS handshake record."""


@dataclass
class DataStatus:
    wire_size: int = 0  # octets of message on the wire, terminator excluded
    bare_line_end: bool = False
    too_big: bool = False


class Reader:
    def __init__(self, sock: socket.socket, timeout: float,
                 flush: Callable[[], None], touch: Callable[[], None] | None = None,
                 stopping: Callable[[], bool] | None = None, *,
                 min_data_rate: int = 0, max_session_time: float = 0,
                 watch_tls_hello: bool = False):
        self.sock = sock
        self.timeout = float(timeout)
        # A per-wait timeout alone lets 1 byte every timeout-1 s hold a
        # worker forever: these two bound the average and the whole.
        self.min_data_rate = min_data_rate
        self.session_end = (time.monotonic() + max_session_time
                            if max_session_time else float("inf"))
        self.flush = flush
        self.touch = touch or (lambda: None)
        self.stopping = stopping
        self.buf = bytearray()
        # A TLS ClientHello as the first bytes of the session: a client
        # that wanted the implicit-TLS port (cleared at the first line).
        self.watch_tls_hello = watch_tls_hello
        # Once per session (one ioctl); the poll object never changes fd:
        # STARTTLS wraps the same descriptor.
        sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._polling = select.POLLIN
        # What "wait, then retry" looks like: EAGAIN, and after STARTTLS
        # OpenSSL's want-read/want-write too (ssl is imported only by a
        # server with TLS configured, so these are filled in start_tls).
        self._retry: tuple[type[OSError], ...] = (BlockingIOError,)
        self._want_read: type[OSError] | None = None
        self._tls = False

    # -- raw input ---------------------------------------------------------
    def _recv(self, deadline: float, idle: bool = False,
              too_slow: type[ReadTimeout] = ReadTimeout) -> None:
        """Append one recv() to the buffer; flushes pending replies first.
        `deadline` passing raises `too_slow`; the session's end, SessionTooLong.
        `idle` (between commands): a stop raises StopRequested, checked
        before blocking and every STOP_POLL seconds while waiting."""
        self.flush()
        if self.session_end < deadline:
            deadline, too_slow = self.session_end, SessionTooLong
        stopping = self.stopping if idle else None
        if stopping is not None and stopping():
            raise StopRequested()
        event = select.POLLIN
        while True:
            # Bytes OpenSSL already decrypted never show on the socket.
            if not self._tls_pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise too_slow()
                if not self._wait(event, remaining if stopping is None
                                  else min(remaining, STOP_POLL)):
                    if stopping is not None and stopping():
                        raise StopRequested()
                    continue
            try:
                data = self.sock.recv(RECV_SIZE)
                break
            except self._retry as exc:  # woken without a whole TLS record, or TLS must write
                event = self._event(exc, select.POLLIN)
            except (ConnectionError, OSError) as exc:
                raise PeerClosed(str(exc)) from None
        if not data:
            raise PeerClosed("EOF")
        if self.watch_tls_hello and not self.buf and data[0] == _TLS_HANDSHAKE:
            raise TLSOnPlainPort()
        self.buf += data
        self.touch()

    # -- the socket itself -------------------------------------------------
    def _wait(self, event: int, seconds: float) -> bool:
        """Poll our socket for `event`; False when `seconds` passed first.
        Rounded up to whole ms: a 0 ms poll would spin until the deadline."""
        if event != self._polling:
            self._poll.modify(self.sock.fileno(), event)
            self._polling = event
        return bool(self._poll.poll(math.ceil(seconds * 1000)))

    def _tls_pending(self) -> bool:
        return self._tls and self.sock.pending() > 0  # type: ignore[attr-defined]

    def _event(self, exc: OSError, default: int) -> int:
        """The poll event a would-block error waits for."""
        if type(exc) is BlockingIOError:
            return default
        return select.POLLIN if type(exc) is self._want_read else select.POLLOUT

    def _wait_until(self, event: int, deadline: float, what: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._wait(event, remaining):
            raise TimeoutError(f"{what} timed out")

    def send(self, data: bytes, timeout: float) -> None:
        """All of `data` within `timeout` (TimeoutError), else OSError.
        Written first, polled only when the socket's buffer is full."""
        view, deadline = memoryview(data), 0.0
        while view:
            try:
                view = view[self.sock.send(view):]
                continue
            except self._retry as exc:
                event = self._event(exc, select.POLLOUT)
            deadline = deadline or time.monotonic() + timeout
            self._wait_until(event, deadline, "send")

    def discard_buffer(self) -> int:
        """Drop everything buffered (plaintext after STARTTLS); returns count."""
        count = len(self.buf)
        self.buf.clear()
        return count

    def start_tls(self, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
        """Server-side TLS on this socket from now on; raises ssl.SSLError /
        OSError when the handshake fails."""
        import ssl  # loaded already: the caller built `context`

        tls = context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        self.sock = tls  # non-blocking like the plain socket it wraps
        self._tls, self._want_read = True, ssl.SSLWantReadError
        self._retry = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
        deadline = time.monotonic() + timeout
        while True:
            try:
                tls.do_handshake()
                return tls
            except self._retry as exc:
                self._wait_until(self._event(exc, select.POLLIN), deadline, "TLS handshake")

    def close(self) -> None:
        close_gently(self.sock)

    def peek(self, wait: float) -> bool:
        """True when client bytes are buffered or arrive within `wait`
        seconds; consumes nothing (for the earlytalker plugin)."""
        if self.buf:
            return True
        if self._tls_pending():
            return True
        try:
            if not self._wait(select.POLLIN, max(wait, 0.0)):
                return False
            if self._tls:
                return True  # no MSG_PEEK through TLS: a record is there
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except (OSError, ValueError):
            return False

    # -- command lines -----------------------------------------------------
    def read_command(self, limit: int = MAX_LINE) -> tuple[int, bytes]:
        """Next command line without its CRLF, as (LINE|TOO_LONG|BARE, line).

        `limit` counts the CRLF; an AUTH command line may be MAX_AUTH_LINE
        long (its initial response).  An over-long line is consumed up to
        its CRLF and returned as TOO_LONG with only its first `limit` octets."""
        deadline = time.monotonic() + self.timeout
        while True:
            end = self.buf.find(b"\r\n", 0, limit)
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 2]
                self.watch_tls_hello = False
                if b"\r" in line or b"\n" in line:
                    return BARE, line
                return LINE, line
            if len(self.buf) >= limit:
                if limit < MAX_AUTH_LINE and self.buf[:5].upper() == b"AUTH ":
                    limit = MAX_AUTH_LINE
                    continue
                return TOO_LONG, self._discard_long_line(deadline, limit)
            self._recv(deadline, idle=True)

    def _discard_long_line(self, deadline: float, limit: int = MAX_LINE) -> bytes:
        head = bytes(self.buf[:limit])
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                del self.buf[:end + 2]
                return head
            # Keep a trailing CR: its LF may be the first byte of the next recv.
            keep = 1 if self.buf.endswith(b"\r") else 0
            del self.buf[:len(self.buf) - keep]
            self._recv(deadline)

    # -- DATA --------------------------------------------------------------
    def read_data(self, sink: Callable[[bytes], None], limit: int) -> DataStatus:
        """Read a message up to the line ".", handing `sink` the content
        dot-unstuffed with LF line ends, in order. Once a bare CR/LF is seen
        or the size passes `limit`, nothing more reaches `sink`, but the
        message is still read to its end. Bytes after the terminator stay
        buffered (pipelined commands)."""
        status = DataStatus()
        at_line_start = True  # the buffer starts at the beginning of a line
        started, received = time.monotonic(), len(self.buf)
        while True:
            buf = self.buf
            if at_line_start and buf.startswith(b".\r\n"):
                del buf[:3]
                return status
            end = buf.find(b"\r\n.\r\n")
            if end >= 0:
                self._data_piece(bytes(buf[:end + 2]), at_line_start, status, sink, limit)
                del buf[:end + 5]
                return status
            cut = buf.rfind(b"\r\n") + 2
            if cut >= 2:
                at_line_start = self._data_piece(bytes(buf[:cut]), at_line_start,
                                                 status, sink, limit)
                del buf[:cut]
            elif len(buf) > MAX_DATA_PENDING:
                cut = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
                at_line_start = self._data_piece(bytes(buf[:cut]), at_line_start,
                                                 status, sink, limit)
                del buf[:cut]
            before = len(self.buf)
            self._recv(*self._data_deadline(started, received))
            received += len(self.buf) - before

    def _data_deadline(self, started: float, received: int) -> tuple[float, bool, type]:
        """When the next DATA bytes are due: `timeout` from now, or sooner,
        the moment the average rate since DATA began drops below
        min_data_rate (never before `timeout` has passed in all)."""
        wait = time.monotonic() + self.timeout
        if not self.min_data_rate:
            return wait, False, ReadTimeout
        slow = started + max(self.timeout, received / self.min_data_rate)
        return (slow, False, DataTooSlow) if slow < wait else (wait, False, ReadTimeout)

    @staticmethod
    def _data_piece(piece: bytes, at_line_start: bool, status: DataStatus,
                    sink: Callable[[bytes], None], limit: int) -> bool:
        """Account for and deliver one piece; returns whether it ended a line.
        A piece never splits a CRLF, so per-piece counts add up."""
        status.wire_size += len(piece)
        if status.bare_line_end or status.too_big:
            return piece.endswith(b"\r\n")
        crlf = piece.count(b"\r\n")
        if piece.count(b"\r") != crlf or piece.count(b"\n") != crlf:
            status.bare_line_end = True
            return piece.endswith(b"\r\n")
        if status.wire_size > limit:
            status.too_big = True
            return piece.endswith(b"\r\n")
        text = piece.replace(b"\r\n", b"\n") if crlf else piece
        if at_line_start and text.startswith(b"."):
            text = text[1:]
        if b"\n." in text:
            text = text.replace(b"\n.", b"\n")
        sink(text)
        return piece.endswith(b"\r\n")


def close_gently(sock: socket.socket) -> None:
    """Close after our last reply without losing it: a command the client
    pipelined behind it (anything after QUIT, or EHLO right after the
    banner while we say 421 at a stop) would make close() send a RST, and
    the client's kernel would drop our reply unread.  FIN first, then
    discard what is already queued, never waiting for the client."""
    if sock.fileno() < 0:
        return  # closed already (or STARTTLS took it over)
    try:
        sock.shutdown(socket.SHUT_WR)
        if sock.gettimeout() != 0.0:  # a Reader's socket is non-blocking already
            sock.setblocking(False)
        for _ in range(16):  # bounded
            if not sock.recv(65536):
                break
    except OSError:  # nothing queued (EAGAIN), TLS wants more, peer gone
        pass
    with contextlib.suppress(OSError):
        sock.close()
