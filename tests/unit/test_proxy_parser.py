"""qsmtp.proxy: the PROXY protocol v1/v2 parser, on exact bytes, plus a
hypothesis fuzz run (never anything but Header / NeedMore / ProxyError, and
never a claim on bytes past the header)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsmtp.proxy import (
    MAX_V2_PAYLOAD,
    V1_MAX,
    V2_SIGNATURE,
    Header,
    NeedMore,
    ProxyError,
    build_v2,
    parse,
)

SMTP = b"EHLO client.test\r\n"  # what a pipelining client may send right after

# HAProxy's spec, section 2.2: a TCP4 v2 header for 192.0.2.7:56324 -> 198.51.100.1:25
V2_TCP4 = bytes.fromhex(
    "0d0a0d0a000d0a515549540a"  # signature
    "21"                        # version 2, command PROXY
    "11"                        # AF_INET, STREAM
    "000c"                      # 12 bytes of addresses
    "c0000207" "c6336401"       # 192.0.2.7, 198.51.100.1
    "dc04" "0019")              # 56324, 25
V2_LOCAL = bytes.fromhex("0d0a0d0a000d0a515549540a" "20" "00" "0000")


def test_v1_tcp4_exact():
    line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n"
    header, used = parse(line + SMTP, "v1")
    assert header == Header(1, False, ("192.0.2.7", 56324), ("198.51.100.1", 25))
    assert used == len(line)


def test_v1_tcp6_and_mapped_ipv4():
    line = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 587\r\n"
    assert parse(line)[0].source == ("2001:db8::7", 4000)
    mapped = b"PROXY TCP6 ::ffff:192.0.2.9 2001:db8::1 4000 25\r\n"
    assert parse(mapped)[0].source == ("192.0.2.9", 4000)


def test_v1_unknown_is_local():
    header, used = parse(b"PROXY UNKNOWN ffff:: ::1 1 2\r\nQUIT\r\n")
    assert header.local and header.source is None and used == 30


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",       # a field missing
    b"PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n",     # v6 address in TCP4
    b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",   # port out of range
    b"PROXY TCP4 192.0.2.7 198.51.100.1 025 25\r\n",     # leading zero
    b"PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",      # double space
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",         # bare LF
    b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",       # not TCP
    b"PROXY TCP4 host.test 198.51.100.1 1 25\r\n",       # a name, not an address
    b"EHLO client.test\r\n",                              # no header at all
])
def test_v1_malformed(line):
    with pytest.raises(ProxyError):
        parse(line, "any")


def test_v1_oversized_line():
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP4 " + b"1" * V1_MAX, "v1")


def test_v1_incomplete_asks_one_byte_at_a_time():
    with pytest.raises(NeedMore) as more:
        parse(b"PROXY TCP4 192.0.2.7 1")
    assert more.value.count == 1
    with pytest.raises(NeedMore) as more:
        parse(b"")
    assert more.value.count == 15  # the shortest header: never read past it


def test_v2_tcp4_exact():
    header, used = parse(V2_TCP4 + SMTP, "v2")
    assert header == Header(2, False, ("192.0.2.7", 56324), ("198.51.100.1", 25))
    assert used == 28
    assert build_v2(("192.0.2.7", 56324), ("198.51.100.1", 25)) == V2_TCP4


def test_v2_tcp6_with_tlvs():
    tlvs = ((0x01, b"smtp"), (0x05, b"unique-id-1"), (0x04, b""))
    raw = build_v2(("2001:db8::7", 1234), ("2001:db8::1", 25), tlvs)
    header, used = parse(raw + SMTP)
    assert header.source == ("2001:db8::7", 1234) and header.tlvs == tlvs
    assert used == len(raw) == 16 + 36 + 7 + 14 + 3


def test_v2_local_health_check():
    header, used = parse(V2_LOCAL + b"HELO haproxy\r\n")
    assert header.local and header.source is None and used == 16


def test_v2_unspec_proxy_keeps_the_real_peer():
    raw = V2_SIGNATURE + bytes([0x21, 0x00]) + b"\x00\x00"
    assert parse(raw)[0].local


def test_v2_incomplete_asks_for_exactly_the_rest():
    with pytest.raises(NeedMore) as more:
        parse(V2_TCP4[:13])
    assert more.value.count == 3
    with pytest.raises(NeedMore) as more:
        parse(V2_TCP4[:20])
    assert more.value.count == 8


@pytest.mark.parametrize("raw,why", [
    (V2_SIGNATURE + bytes([0x11, 0x11]) + b"\x00\x0c" + b"\x00" * 12, "version"),
    (V2_SIGNATURE + bytes([0x22, 0x11]) + b"\x00\x0c" + b"\x00" * 12, "command"),
    (V2_SIGNATURE + bytes([0x21, 0x12]) + b"\x00\x0c" + b"\x00" * 12, "family"),  # UDP
    (V2_SIGNATURE + bytes([0x21, 0x31]) + b"\x00\x00", "family"),                 # unix
    (V2_SIGNATURE + bytes([0x21, 0x11]) + b"\x00\x08" + b"\x00" * 8, "shorter"),
    (V2_TCP4[:15] + b"\x0f" + b"\x00" * 12 + b"\x01\x00\x05ab", "longer than"),
    (V2_TCP4[:15] + b"\x0e" + b"\x00" * 12 + b"\x01\x00", "truncated"),
    (V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", MAX_V2_PAYLOAD + 1), "too long"),
    (b"\r\n\r\n\x00\r\nQUIT\r" + b"\x21\x11\x00\x00", "header"),
])
def test_v2_malformed(raw, why):
    with pytest.raises(ProxyError, match=why):
        parse(raw, "v2")


def test_protocol_restricts_the_version():
    with pytest.raises(ProxyError):
        parse(V2_TCP4, "v1")
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\r\n", "v2")


def _feed(data: bytes, protocol: str):
    """Drive parse() the way the socket reader does: read exactly what
    NeedMore asks for. Returns (header, used) or raises ProxyError / EOFError."""
    have = 0
    while True:
        try:
            return parse(data[:have], protocol)
        except NeedMore as more:
            assert more.count > 0
            if have + more.count > len(data):
                raise EOFError from None
            have += more.count


prefixes = st.sampled_from([b"", V2_SIGNATURE, V2_TCP4[:16], b"PROXY ", b"PROXY TCP4 "])


@settings(max_examples=1500, deadline=None)
@given(prefix=prefixes, tail=st.binary(max_size=200),
       protocol=st.sampled_from(["v1", "v2", "any"]))
def test_fuzz_parser(prefix, tail, protocol):
    data = prefix + tail
    try:
        header, used = _feed(data, protocol)
    except (ProxyError, EOFError):
        return
    assert 15 <= used <= len(data)
    assert used <= (V1_MAX if header.version == 1 else 16 + MAX_V2_PAYLOAD)
    # whatever followed the header was never asked for
    assert parse(data[:used], protocol) == (header, used)
    if not header.local:
        assert header.source is not None and 0 <= header.source[1] <= 65535


@settings(max_examples=300, deadline=None)
@given(src=st.ip_addresses(v=4), dst=st.ip_addresses(v=4),
       sport=st.integers(0, 65535), dport=st.integers(0, 65535),
       tlvs=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=5),
       tail=st.binary(max_size=30))
def test_fuzz_v2_round_trip(src, dst, sport, dport, tlvs, tail):
    raw = build_v2((str(src), sport), (str(dst), dport), tuple(tlvs))
    header, used = _feed(raw + tail, "v2")
    assert used == len(raw)
    assert header.source == (str(src), sport) and header.dest == (str(dst), dport)
    assert header.tlvs == tuple(tlvs)
