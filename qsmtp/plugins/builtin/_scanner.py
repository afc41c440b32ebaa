"""What the content-scanner clients (spamassassin, clamav) share: the daemon
address, one overall deadline per scan, streaming the message out of its
MessageBody (spooled to disk or not) without ever holding it twice, and the
fail-closed/pass-through choice when the scanner is down.

Addresses: `host:port`, `[v6addr]:port`, or a unix socket as `unix:/path`
or just `/path`.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from qsmtp.plugins.api import (
    DECLINED,
    DENYSOFT,
    Option,
    Plugin,
    PluginError,
    body_of,
    transaction_of,
)

if TYPE_CHECKING:
    from qsmtp.plugins.api import HookReturn, Plugin
    from qsmtp.smtp.state import Session, Transaction


ON_ERROR = ("defer", "pass")
SEND_CHUNK = 1 << 16
TEMPFAIL_TEXT = "4.3.0 Content scanner unavailable, try again later"


def scanner_options(address: str, timeout: float, max_size: int) -> dict[str, Option]:
    return {
        "address": Option(str, address, "daemon: host:port, [v6]:port or unix:/path"),
        "timeout": Option(float, timeout,
                          "seconds for the whole scan (must be < server.hook_timeout)",
                          bounds=(0.1, 3600)),
        "max_size": Option(int, max_size, "messages larger than this (bytes) are not scanned",
                           bounds=(1, 1 << 31)),
        "on_error": Option(str, "defer", "scanner down/timing out: defer (451) or pass",
                           choices=ON_ERROR),
    }


def parse_address(plugin: str, value: str) -> tuple[int, Any]:
    """-> (address family, sockaddr) for socket.socket / connect."""
    if value.startswith("unix:") or value.startswith("/"):
        path = value[5:] if value.startswith("unix:") else value
        if not path.startswith("/"):
            raise PluginError(plugin, "address", f"unix socket path must be absolute ({value!r})")
        return socket.AF_UNIX, path
    host, sep, port = value.rpartition(":")
    v6 = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if v6 else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PluginError(plugin, "address",
                          f"expected host:port, [v6]:port or unix:/path (got {value!r})")
    return (socket.AF_INET6 if v6 or ":" in host else socket.AF_INET), (host, int(port))


class Scanner(Plugin):
    """What clamav and spamassassin share: the daemon's address, parsed at load."""

    family: int
    sockaddr: Any  # a path (AF_UNIX) or (host, port); both set by check_common


def check_common(plugin: Scanner) -> None:
    """Load-time checks of the options scanner_options() declares."""
    opts = plugin.opts
    plugin.family, plugin.sockaddr = parse_address(plugin.name, opts.address)
    if opts.timeout <= 0:
        raise PluginError(plugin.name, "timeout", "must be > 0")
    budget = float(plugin.config.server.hook_timeout)
    if 0 < budget <= opts.timeout:
        # Past the hook budget the dispatcher answers 451 itself, so
        # on_error = "pass" would never get a chance to apply.
        raise PluginError(plugin.name, "timeout",
                          f"must be below server.hook_timeout ({budget:g}s)")
    if opts.max_size <= 0:
        raise PluginError(plugin.name, "max_size", "must be > 0")


class Connection:
    """One request/response exchange with a deadline over the whole of it."""

    def __init__(self, family: int, sockaddr: Any, timeout: float):
        self.deadline = time.monotonic() + timeout
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family != socket.AF_UNIX:
                # Requests go out in several writes before the answer is
                # read: don't let Nagle hold the last piece back.
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._arm()
            self.sock.connect(sockaddr)
        except BaseException:
            self.sock.close()
            raise

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("scanner deadline passed")
        self.sock.settimeout(left)

    def send(self, data: bytes | memoryview) -> None:
        self._arm()
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        # The peer may already have closed; its reply can still be read.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def read_all(self, limit: int, until: bytes | None = None) -> bytes:
        """Read until the peer closes, `until` appears, or `limit` bytes."""
        data = bytearray()
        while len(data) < limit:
            self._arm()
            chunk = self.sock.recv(min(65536, limit - len(data)))
            if not chunk:
                break
            data += chunk
            if until is not None and until in chunk:
                break
        return bytes(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def message_size(txn: Transaction) -> int:
    return sum(len(line) + 1 for line in _added(txn)) + body_of(txn).size


def message_chunks(txn: Transaction) -> Iterator[bytes | memoryview]:
    """The message as it will be queued so far (headers other plugins added
    first, then the received message), LF line ends, in bounded pieces: a
    spooled body is read from its file 64 KiB at a time."""
    head = b"".join(line + b"\n" for line in _added(txn))
    if head:
        yield head
    for chunk in body_of(txn).iter_chunks():
        view = memoryview(chunk)
        for start in range(0, len(view), SEND_CHUNK):
            yield view[start:start + SEND_CHUNK]


def _added(txn: Transaction) -> list[bytes]:
    return [h.encode("utf-8", "surrogateescape") for h in getattr(txn, "added_headers", [])]


def unavailable(plugin: Plugin, session: Session, problem: str) -> HookReturn:
    """The scanner could not give a verdict: 451 or pass, per `on_error`."""
    plugin.log.error("session %s: %s %s (%s)", session.id, plugin.name, problem,
                     "deferring" if plugin.opts.on_error == "defer" else "passing unscanned")
    transaction_of(session).notes[plugin.name] = {"error": problem}
    if plugin.opts.on_error == "defer":
        return DENYSOFT, TEMPFAIL_TEXT
    return DECLINED


def printable(text: str, limit: int = 200) -> str:
    """Daemon-supplied text made safe for a reply or header line."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]
