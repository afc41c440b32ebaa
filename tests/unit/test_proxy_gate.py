"""qsmtp.proxy_gate: reading the header off a real socket (a socketpair)
takes exactly the header's bytes, within the budget; trust and listeners."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsmtp.proxy import build_v2
from qsmtp.proxy_gate import Endpoints, ProxyPolicy, Refused, admit, read_header

SMTP = b"EHLO early.test\r\n"
POLICY = ProxyPolicy("any", (ipaddress.ip_network("10.0.0.10/32"),),
                     (), 1.0)


def feed(chunks: list[bytes], delay: float = 0.0) -> socket.socket:
    ours, theirs = socket.socketpair()

    def write():
        try:
            for chunk in chunks:
                theirs.sendall(chunk)
                time.sleep(delay)
        except OSError:
            pass  # the reader gave up (the budget tests): that is the point
        finally:
            theirs.close()
    threading.Thread(target=write, daemon=True).start()
    return ours


def rest_of(sock: socket.socket) -> bytes:
    sock.settimeout(2)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@settings(max_examples=60, deadline=None)
@given(header=st.sampled_from([
           b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n",
           b"PROXY UNKNOWN\r\n",
           build_v2(("2001:db8::7", 1), ("2001:db8::1", 25), ((1, b"smtp"),)),
           build_v2(None, None)]),
       cuts=st.lists(st.integers(1, 60), max_size=4))
def test_reads_exactly_the_header_however_it_arrives(header, cuts):
    data, chunks = header + SMTP, []
    for cut in cuts:
        if cut < len(data):
            chunks.append(data[:cut])
            data = data[cut:]
    chunks.append(data)
    sock = feed(chunks)
    parsed = read_header(sock, "any", 2.0)
    assert rest_of(sock) == SMTP  # the SMTP bytes after it are still there
    assert parsed.version in (1, 2)
    sock.close()


def test_a_trickle_past_the_budget_is_refused_in_time():
    line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n"
    sock = feed([bytes([b]) for b in line], delay=0.1)
    started = time.monotonic()
    with pytest.raises(Refused, match="time budget"):
        read_header(sock, "any", 0.5)
    assert time.monotonic() - started < 1.0
    sock.close()


def test_a_close_before_the_header_is_refused():
    sock = feed([b"PROXY TCP4 192"])
    with pytest.raises(Refused, match="closed before"):
        read_header(sock, "any", 2.0)
    sock.close()


def test_admit_uses_the_header_or_closes():
    real = Endpoints("10.0.0.10", 40000, "10.0.0.11", 25)
    sock = feed([build_v2(("192.0.2.7", 1234), ("192.0.2.25", 25)) + SMTP])
    assert admit(POLICY, sock, real, "smtp") == Endpoints("192.0.2.7", 1234, "192.0.2.25", 25)
    sock.close()
    sock = feed([build_v2(None, None)])
    assert admit(POLICY, sock, real, "smtp") is real  # LOCAL: the balancer itself
    sock.close()
    untrusted = Endpoints("10.0.0.99", 40000, "10.0.0.11", 25)
    sock = feed([build_v2(("192.0.2.7", 1234), ("192.0.2.25", 25))])
    assert admit(POLICY, sock, untrusted, "smtp") is None
    assert sock.fileno() == -1  # closed, nothing was sent


def test_no_policy_or_other_listener_keeps_the_real_peer():
    real = Endpoints("10.0.0.99", 1, "10.0.0.11", 587)
    ours, theirs = socket.socketpair()
    assert admit(None, ours, real, "smtp") is real
    only_25 = ProxyPolicy("v2", POLICY.trusted, ("smtp", ":25"), 1.0)
    assert not only_25.applies("submission", 587)
    assert only_25.applies("smtp", 587) and only_25.applies("x", 25)
    assert admit(only_25, ours, real, "submission") is real
    ours.close()
    theirs.close()


def test_trust_is_by_network_and_family():
    policy = ProxyPolicy("v2", tuple(ipaddress.ip_network(n) for n in
                                     ("10.0.0.0/29", "2001:db8::/64")), (), 1.0)
    assert policy.trusts("10.0.0.7") and policy.trusts("2001:db8::5")
    assert not policy.trusts("10.0.0.8") and not policy.trusts("2001:db9::5")
    assert not policy.trusts("not-an-ip")
