"""Serve one SMTP session in the supervisor, before the first fork.

Why: the first session a process serves writes what CPython and the
standard library build on first use (each code object's warm-up counter and
specialised bytecode, one-time tables and caches). In a worker, each of
those writes copies the shared page it lands on into that worker (smaps,
A/B with 15 busy workers: 3.94 -> 3.75 MiB private dirty each).
Done once here, every fork inherits those pages already written, and shared.

The session runs against an App of its own: the built-ins only (relay,
headers, the configured queue), so no `[[plugins]]` entry runs (no DNS
query, no side effect). It goes through EHLO, MAIL, RCPT and a whole DATA
body, but the client side ends before the final dot: nothing is queued
(no file, no fsync: ~1 ms of the cold start), and logging is off
meanwhile. A failure only costs the warm-up (a debug line).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time

from qsmtp import log as qlog
from qsmtp.app import App
from qsmtp.config import Config, ConfigError
from qsmtp.smtp.session import run_session
from qsmtp.smtp.state import ConnectionInfo

log = logging.getLogger("qsmtp.supervisor")

DOMAIN = "warm-up.invalid"  # RFC 2606: never a real domain
# A typical message: a few headers and ~5 KB of body lines; no final dot.
SCRIPT = (b"EHLO " + DOMAIN.encode() + b"\r\n"
          b"MAIL FROM:<warm-up@" + DOMAIN.encode() + b">\r\n"
          b"RCPT TO:<postmaster@" + DOMAIN.encode() + b">\r\n"
          b"DATA\r\nFrom: <warm-up@" + DOMAIN.encode() + b">\r\nSubject: warm-up\r\n\r\n"
          + (b"x" * 76 + b"\r\n") * 64)


def warm_up(config: Config) -> bytes | None:
    """Run the session; -> the replies the client side got (None: no session)."""
    started = time.monotonic()
    try:
        app = App.load(_config(config))
    except (OSError, ConfigError) as exc:
        log.debug("warm-up skipped: %s", exc)
        return None
    logging.disable(logging.CRITICAL)
    try:
        replies = _session(app)
    except OSError as exc:  # no socketpair (EMFILE...)
        replies, failure = None, exc
    finally:
        logging.disable(logging.NOTSET)
        qlog.unbind()
    if replies is None:
        log.debug("warm-up skipped: %s", failure)
        return None
    log.debug("warm-up: %d reply lines in %.3fs", replies.count(b"\r\n"),
              time.monotonic() - started)
    return replies


def _config(config: Config) -> Config:
    """The running config minus its plugins and TLS, relaying for the
    warm-up's own domain."""
    values = dict(config.values)
    values.update({"tls.cert": "", "tls.key": "", "relay.clients": [],
                   "relay.domains": [DOMAIN]})
    sections = dict(config.sections, relay=True)
    return Config.build(values, dict(config.origin), plugins=[], path=config.path,
                        sections=sections)


def _session(app: App) -> bytes:
    ours, client = socket.socketpair()
    with ours, client:
        # The whole client side is written first (it fits in the socket
        # buffer), so the engine never waits: the session ends at the EOF.
        client.sendall(SCRIPT)
        client.shutdown(socket.SHUT_WR)
        run_session(app, ours, ConnectionInfo("127.0.0.1", 25, "127.0.0.1", 25))
        client.setblocking(False)
        replies = []
        with contextlib.suppress(BlockingIOError):
            while chunk := client.recv(65536):  # a few hundred bytes: bounded
                replies.append(chunk)
        return b"".join(replies)
