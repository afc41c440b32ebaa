"""`qsmtpctl metrics-http`: answer ONE Prometheus scrape on stdin/stdout.

Meant for qsmtp-metrics.socket (Accept=yes): systemd listens and accepts,
and hands each connection to a short-lived qsmtp-metrics@.service running
this command with the connection as stdin/stdout.  There is no HTTP server
in the supervisor: the body is exactly `qsmtpctl status --format
prometheus` (run as a child, so it is the same code, same registry read,
same `qsmtp_up 0` when nothing runs) wrapped in a minimal HTTP/1.0 reply.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import BinaryIO

import click

from qsmtp.ctl.common import config_option, config_path

MAX_HEAD = 8192     # request line + headers; more is not a scrape
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATHS = ("/metrics", "/")


def read_head(stream: BinaryIO) -> bytes:
    """The request line; the headers up to the blank line are read and
    dropped (closing with unread bytes would reset the connection before the
    scraper reads our reply).  b"" when the head is missing or too big."""
    request, total = b"", 0
    while True:
        line = stream.readline(MAX_HEAD + 1)
        total += len(line)
        if not line or total > MAX_HEAD:
            return b""
        if not request:
            request = line
        elif line in (b"\r\n", b"\n"):
            return request


def reply(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


def answer(request: bytes, scrape: Callable[[], bytes]) -> bytes:
    parts = request.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return reply("400 Bad Request", b"bad request\n")
    if parts[0] not in (b"GET", b"HEAD"):
        return reply("405 Method Not Allowed", b"GET /metrics\n")
    if parts[1].split(b"?", 1)[0].decode("latin-1") not in PATHS:
        return reply("404 Not Found", b"GET /metrics\n")
    out = reply("200 OK", scrape(), CONTENT_TYPE)
    return out.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if parts[0] == b"HEAD" else out


def status_prometheus(config: str | None) -> bytes:
    """`qsmtpctl status --format prometheus` (exit 1 = not running still
    prints `qsmtp_up 0`, which is a valid scrape)."""
    argv = [sys.executable, "-m", "qsmtp.ctl.cli", "status", "--format", "prometheus"]
    if config:
        argv += ["--config", config]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return b"# qsmtpctl status timed out\nqsmtp_up 0\n"
    if not done.stdout.strip():
        return b"# " + done.stderr.strip().replace(b"\n", b" ")[:300] + b"\nqsmtp_up 0\n"
    return done.stdout if done.stdout.endswith(b"\n") else done.stdout + b"\n"


@click.command("metrics-http")
@config_option
def metrics_http() -> None:
    """Answer one HTTP scrape on stdin/stdout with the Prometheus status
    (for the socket-activated qsmtp-metrics.socket, Accept=yes)."""
    config = config_path()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    request = read_head(stdin)
    if not request:
        return  # nothing (or garbage) asked: nothing said
    stdout.write(answer(request, lambda: status_prometheus(config)))
    stdout.flush()
