"""A trickling client cannot hold a worker (issue 12.7): the per-wait
`timeout` alone lets one byte every timeout-1 s keep a session forever.
`min_data_rate` cuts a DATA transfer whose average falls below it once it
has run longer than `timeout`; `max_session_time` bounds a whole session.
Both: 421 4.4.2 and close, nothing stored.  Live, with a raw socket."""

from __future__ import annotations

import socket
import time

from helpers.server import read_line
from reltools import maildir_files

TIMEOUT = 2  # server.timeout of these fleets: the tests take a few seconds


def _open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    _expect(sock, b"220")
    return sock


def _expect(sock: socket.socket, code: bytes) -> bytes:
    data = read_line(sock)
    assert data.startswith(code), data
    return data


def _to_data(sock: socket.socket) -> None:
    for line, code in ((b"EHLO slow.test", b"250"), (b"MAIL FROM:<a@outside.test>", b"250"),
                       (b"RCPT TO:<user@example.test>", b"250"), (b"DATA", b"354")):
        sock.sendall(line + b"\r\n")
        _expect(sock, code)


def _trickle(sock: socket.socket, piece: bytes, every: float, for_s: float) -> float | None:
    """Send `piece` every `every` s for `for_s` s; the time the server cut us
    off (a reply arrived or the peer closed), or None if it never did."""
    start = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - start < for_s:
        try:
            sock.sendall(piece)
            if sock.recv(4096, socket.MSG_PEEK):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def test_trickling_data_is_cut_with_421_and_nothing_stored(fleet):
    srv = fleet(children=2, idle_children=1, timeout=TIMEOUT, min_data_rate=500)
    with _open(srv.port) as sock:
        _to_data(sock)
        cut = _trickle(sock, b"x", every=0.5, for_s=4 * TIMEOUT)  # 2 bytes/s
        assert cut is not None and TIMEOUT - 0.5 <= cut <= TIMEOUT + 1.5, cut
        sock.settimeout(5)
        assert _expect(sock, b"421 4.4.2").rstrip().endswith(b"Data rate too low")
        assert sock.recv(1) == b""  # closed
    assert maildir_files(srv.maildir).get("new", []) == []
    assert "timed out: data rate too low" in srv.log()


def test_a_steady_client_above_the_rate_is_not_cut(fleet):
    srv = fleet(children=2, idle_children=1, timeout=TIMEOUT, min_data_rate=500)
    with _open(srv.port) as sock:
        _to_data(sock)
        piece = b"y" * 198 + b"\r\n"  # 1000 bytes/s for 2.5 timeouts
        assert _trickle(sock, piece, every=0.2, for_s=2.5 * TIMEOUT) is None
        sock.settimeout(10)
        sock.sendall(b".\r\n")
        _expect(sock, b"250")
    assert len(maildir_files(srv.maildir)["new"]) == 1


def test_max_session_time_ends_a_chatty_session(fleet):
    srv = fleet(children=2, idle_children=1, timeout=TIMEOUT, max_session_time=3)
    with _open(srv.port) as sock:
        start = time.monotonic()
        sock.settimeout(10)
        reply = b""
        while time.monotonic() - start < 10:
            sock.sendall(b"NOOP\r\n")
            reply = _expect(sock, b"")
            if not reply.startswith(b"250"):
                break
            time.sleep(0.5)  # always well within `timeout`
        assert reply.startswith(b"421 4.4.2") and b"Session too long" in reply, reply
        assert 3 <= time.monotonic() - start <= 5
