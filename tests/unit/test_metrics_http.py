"""qsmtpctl metrics-http: the HTTP wrapping of one Prometheus scrape (pure
parts), and the shipped units' shape."""

from __future__ import annotations

import io
import re

import pytest

from helpers.units import security, unit
from qsmtp.ctl.metrics import CONTENT_TYPE, MAX_HEAD, answer, read_head

BODY = b"# TYPE qsmtp_up gauge\nqsmtp_up 1\n"


def scrape() -> bytes:
    return BODY


def test_scrape_gets_the_status_with_length_and_type():
    out = answer(b"GET /metrics HTTP/1.1\r\n", scrape)
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[0] == b"HTTP/1.0 200 OK"
    assert f"Content-Type: {CONTENT_TYPE}".encode() in head
    assert f"Content-Length: {len(BODY)}".encode() in head
    assert body == BODY


def test_head_has_no_body_and_root_path_works():
    out = answer(b"HEAD / HTTP/1.0\r\n", scrape)
    assert out.startswith(b"HTTP/1.0 200 OK") and out.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("request_line,status", [
    (b"POST /metrics HTTP/1.1\r\n", b"405"),
    (b"GET /admin HTTP/1.1\r\n", b"404"),
    (b"GET /metrics\r\n", b"400"),
    (b"\x16\x03\x01\x02\x00\x01\r\n", b"400"),   # a TLS hello on the plain port
])
def test_anything_else_is_refused_without_running_status(request_line, status):
    def never() -> bytes:
        raise AssertionError("status must not run")
    assert answer(request_line, never).split(b" ")[1] == status


def test_read_head_reads_up_to_the_blank_line_only():
    stream = io.BytesIO(b"GET /metrics HTTP/1.1\r\nHost: mx1\r\nAccept: */*\r\n\r\nrest")
    assert read_head(stream) == b"GET /metrics HTTP/1.1\r\n"
    assert stream.read() == b"rest"


@pytest.mark.parametrize("data", [b"", b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
                                  b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD + b"\r\n\r\n"])
def test_read_head_gives_up_on_missing_or_huge_heads(data):
    assert read_head(io.BytesIO(data)) == b""


def test_units_accept_per_connection_and_run_the_status():
    sock, service = unit("qsmtp-metrics.socket"), unit("qsmtp-metrics@.service")
    assert sock["Socket"]["Accept"] == "yes"
    assert service["Service"]["StandardInput"] == "socket"
    assert service["Service"]["StandardOutput"] == "socket"
    assert service["Service"]["ExecStart"].startswith("/usr/bin/qsmtpctl metrics-http ")
    assert service["Service"]["Group"] == "qsmtp"  # may read the registry


def test_scrape_unit_exposure_at_most_2():
    out = security("qsmtp-metrics@.service")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match[1]) <= 2.0, out.stdout
