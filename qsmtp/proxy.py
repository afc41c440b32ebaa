"""The PROXY protocol header (HAProxy's spec, versions 1 and 2): pure parsing.

A load balancer in front of qsmtp sends one header before any SMTP byte,
naming the real client.  `parse(buf, protocol)` reads it from the start of
`buf` and either returns `(Header, consumed)`, raises `NeedMore(n)` (at least
n more bytes belong to the header: the reader may read exactly that many and
never swallows SMTP bytes that follow), or raises `ProxyError(reason)`.

Bounds: a v1 line is at most 107 bytes (the spec's limit); a v2 header at
most 16 + MAX_V2_PAYLOAD bytes, TLVs included.  TLVs are split safely (a
truncated one is an error) and kept as (type, value) pairs; none of them
changes who the client is.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107          # "PROXY TCP6 <39> <39> <5> <5>\r\n"
V1_MIN = 15           # "PROXY UNKNOWN\r\n"
MAX_V2_PAYLOAD = 1024  # addresses + TLVs; HAProxy's usual headers are far below
PROTOCOLS = ("v1", "v2", "any")

# v2 address families (high nibble) x transports (low nibble) we accept
_V2_FAMILIES = {0x11: (4, 12), 0x21: (6, 36)}  # TCP over IPv4 / IPv6: (version, size)
_V2_NO_ADDRESS = 0x00  # family and transport unspecified


class ProxyError(ValueError):
    """Malformed, oversized or unsupported header; the connection is closed."""


class NeedMore(Exception):
    """The header is incomplete: at least `count` more bytes belong to it."""

    def __init__(self, count: int):
        super().__init__(count)
        self.count = count


@dataclass(frozen=True)
class Header:
    version: int                       # 1 or 2
    local: bool                        # v2 LOCAL / v1 UNKNOWN: use the real peer
    source: tuple[str, int] | None     # the client (None when local)
    dest: tuple[str, int] | None       # the address the client connected to
    tlvs: tuple[tuple[int, bytes], ...] = ()


def parse(buf: bytes, protocol: str = "any") -> tuple[Header, int]:
    """Parse the header at the start of `buf` (see the module doc)."""
    want_v1 = protocol in ("v1", "any")
    want_v2 = protocol in ("v2", "any")
    if not buf:  # 15 bytes belong to any header, v1 or v2: never over-read
        raise NeedMore(V1_MIN)
    if want_v2 and buf[:12] == V2_SIGNATURE[:len(buf)]:
        if len(buf) < 16:
            raise NeedMore(16 - len(buf))
        return _parse_v2(buf)
    if want_v1 and buf[:6] == V1_PREFIX[:len(buf)]:
        if len(buf) < V1_MIN:
            raise NeedMore(V1_MIN - len(buf))
        return _parse_v1(buf)
    raise ProxyError(f"no PROXY {protocol if protocol != 'any' else 'v1/v2'} header")


# ---- version 1: one text line -------------------------------------------------
def _parse_v1(buf: bytes) -> tuple[Header, int]:
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX or b"\n" in buf[:V1_MAX]:
            raise ProxyError("v1 line too long or without CRLF")
        raise NeedMore(1)  # the line goes on: one byte at a time, never past it
    line = buf[:end]
    if b"\r" in line or b"\n" in line or b"\x00" in line:
        raise ProxyError("v1 line has control bytes")
    try:
        words = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyError("v1 line is not ASCII") from None
    if words[1:2] == ["UNKNOWN"]:
        return Header(1, True, None, None), end + 2
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyError("v1 line is not 'PROXY TCP4|TCP6 src dst sport dport'")
    version = 4 if words[1] == "TCP4" else 6
    source = (_v1_address(words[2], version), _v1_port(words[4]))
    dest = (_v1_address(words[3], version), _v1_port(words[5]))
    return Header(1, False, source, dest), end + 2


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError(f"v1 address {text[:45]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyError(f"v1 address {text!r} is not IPv{version}")
    return _plain(address)


def _plain(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """IPv4-mapped IPv6 as plain IPv4, as for a direct client."""
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _v1_port(text: str) -> int:
    # decimal, no sign, no leading zero (the spec's form), 0..65535
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyError(f"v1 port {text[:8]!r} is not a port number")
    port = int(text)
    if port > 65535:
        raise ProxyError(f"v1 port {port} out of range")
    return port


# ---- version 2: binary -------------------------------------------------------------
def _parse_v2(buf: bytes) -> tuple[Header, int]:
    if buf[:12] != V2_SIGNATURE:
        raise ProxyError("bad v2 signature")
    ver_cmd, family, length = struct.unpack("!BBH", buf[12:16])
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"v2 header with version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyError(f"v2 header with unknown command {command}")
    if length > MAX_V2_PAYLOAD:
        raise ProxyError(f"v2 header too long ({length} > {MAX_V2_PAYLOAD} bytes)")
    if len(buf) < 16 + length:
        raise NeedMore(16 + length - len(buf))
    payload = buf[16:16 + length]
    if command == 0:  # LOCAL: the balancer's own connection (health check)
        return Header(2, True, None, None, _tlvs(payload, 0)), 16 + length
    if family == _V2_NO_ADDRESS:  # PROXY with no address: the spec says use the real one
        return Header(2, True, None, None, _tlvs(payload, 0)), 16 + length
    if family not in _V2_FAMILIES:
        raise ProxyError(f"v2 address family 0x{family:02x} not supported (TCP only)")
    version, size = _V2_FAMILIES[family]
    if length < size:
        raise ProxyError("v2 header shorter than its addresses")
    raw = 4 if version == 4 else 16
    src = _plain(ipaddress.ip_address(payload[:raw]))
    dst = _plain(ipaddress.ip_address(payload[raw:2 * raw]))
    sport, dport = struct.unpack("!HH", payload[2 * raw:2 * raw + 4])
    return Header(2, False, (src, sport), (dst, dport), _tlvs(payload, size)), 16 + length


def _tlvs(payload: bytes, offset: int) -> tuple[tuple[int, bytes], ...]:
    out = []
    while offset < len(payload):
        if offset + 3 > len(payload):
            raise ProxyError("v2 TLV truncated")
        kind, size = struct.unpack("!BH", payload[offset:offset + 3])
        if offset + 3 + size > len(payload):
            raise ProxyError(f"v2 TLV 0x{kind:02x} longer than the header")
        out.append((kind, payload[offset + 3:offset + 3 + size]))
        offset += 3 + size
    return tuple(out)


def build_v2(source: tuple[str, int] | None, dest: tuple[str, int] | None,
             tlvs: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """A v2 header (PROXY, or LOCAL when source is None): tests and tools."""
    extra = b"".join(struct.pack("!BH", k, len(v)) + v for k, v in tlvs)
    if source is None or dest is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0, len(extra)) + extra
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(dest[0])
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", source[1], dest[1]) + extra
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(body)) + body
