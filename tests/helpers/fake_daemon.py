"""A tiny in-test stand-in for a scanner daemon (spamd, clamd), for the
protocol-framing units only: the integration tests use the real daemons
(helpers/spamd.py, helpers/clamd.py).

    with FakeDaemon(handler) as fake:        # listens on 127.0.0.1 (or unix)
        plugin address = fake.address
    fake.seen  # what handler returned for each connection

`handler(sock)` runs in a thread once per connection; it reads the request,
writes the reply and returns whatever the test wants to inspect.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import Any


class FakeDaemon:
    def __init__(self, handler: Callable[[socket.socket], Any], unix: bool = False):
        self.handler = handler
        self.seen: list[Any] = []
        self.errors: list[BaseException] = []
        self.connections = 0
        if unix:
            self.tmp = tempfile.mkdtemp(prefix="qsmtp-fake-")
            path = os.path.join(self.tmp, "daemon.sock")
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(path)
            self.address = f"unix:{path}"
        else:
            self.tmp = None
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            with conn:
                conn.settimeout(10)
                try:
                    self.seen.append(self.handler(conn))
                except BaseException as exc:  # noqa: BLE001 - reported by close()
                    self.errors.append(exc)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(15)
        self.listener.close()
        if self.tmp:
            for name in os.listdir(self.tmp):
                os.unlink(os.path.join(self.tmp, name))
            os.rmdir(self.tmp)

    def __enter__(self) -> FakeDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(65536, size - len(data)))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def recv_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> bytes:
    data = bytearray()
    while marker not in data:
        chunk = sock.recv(1)
        if not chunk or len(data) > limit:
            raise EOFError(f"no {marker!r} in {bytes(data)!r}")
        data += chunk
    return bytes(data)


def scan_against_hung_daemon(scan: Callable[[str], Any],
                             read_request: Callable[[socket.socket], Any]) -> tuple[Any, float]:
    """A daemon that reads the request and then never answers: returns what
    `scan(address)` gave and how long it took (seconds)."""
    import time

    release = threading.Event()

    def hang(sock: socket.socket) -> None:
        read_request(sock)
        release.wait(10)

    with FakeDaemon(hang) as fake:
        started = time.monotonic()
        try:
            result = scan(fake.address)
        finally:
            took = time.monotonic() - started
            release.set()
    return result, took
