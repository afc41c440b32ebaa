"""The worker's side of the PROXY protocol: which connections must carry a
header, from whom it is believed, and reading it off the socket.

Before the greeting, on a listener `[proxy] services` names (all when empty):
the peer must be in `[proxy] trusted` and must send a whole header within
`[proxy] timeout` seconds.  Otherwise the connection is closed without a
banner and one log line says why.  The header's source address then is the
client everywhere (per-IP limit, relay, Received:, plugins, logs, status).
A v2 LOCAL header (the balancer's own health check) or v1 UNKNOWN keeps the
real peer: the balancer gets an ordinary session, which its smtpchk expects.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qsmtp.proxy import Header, NeedMore, ProxyError, parse

if TYPE_CHECKING:
    from qsmtp.config import Config

log = logging.getLogger("qsmtp.proxy")


class Refused(Exception):
    """The connection is closed without a banner; str() is the log reason."""


@dataclass(frozen=True)
class Endpoints:
    peer: str
    port: int
    local: str
    local_port: int


@dataclass(frozen=True)
class ProxyPolicy:
    protocol: str
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    services: tuple[str, ...]
    timeout: float

    @classmethod
    def from_config(cls, config: Config) -> ProxyPolicy | None:
        """None without a [proxy] section: the header is off, as before."""
        if not config.has_section("proxy"):
            return None
        section = config.proxy
        return cls(section.protocol,
                   tuple(ipaddress.ip_network(n, strict=False) for n in section.trusted),
                   tuple(section.services), float(section.timeout))

    def applies(self, service: str, local_port: int) -> bool:
        return (not self.services or service in self.services
                or f":{local_port}" in self.services)

    def trusts(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address.version == net.version and address in net for net in self.trusted)

    def accept(self, sock: socket.socket, real: Endpoints) -> Endpoints:
        """The endpoints to use for this connection; raises Refused."""
        if not self.trusts(real.peer):
            raise Refused(f"untrusted peer {real.peer} (not in proxy.trusted)")
        header = read_header(sock, self.protocol, self.timeout)
        if header.local or header.source is None or header.dest is None:
            return real
        return Endpoints(header.source[0], header.source[1], header.dest[0], header.dest[1])


def read_header(sock: socket.socket, protocol: str, budget: float) -> Header:
    """Read exactly the header's bytes (nothing of the SMTP stream after it)
    within `budget` seconds in total; raises Refused."""
    deadline = time.monotonic() + budget
    buf = b""
    while True:
        try:
            header, _ = parse(buf, protocol)
            return header
        except NeedMore as more:
            buf += _recv_exactly(sock, more.count, deadline, len(buf))
        except ProxyError as exc:
            raise Refused(f"bad PROXY header: {exc}") from None


def _recv_exactly(sock: socket.socket, count: int, deadline: float, have: int) -> bytes:
    data = b""
    while len(data) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Refused(f"no complete PROXY header within the time budget "
                          f"({have + len(data)} bytes)")
        sock.settimeout(left)
        try:
            chunk = sock.recv(count - len(data))
        except TimeoutError:
            continue
        except OSError as exc:
            raise Refused(f"connection lost before the PROXY header: {exc}") from None
        if not chunk:
            raise Refused(f"closed before a complete PROXY header ({have + len(data)} bytes)")
        data += chunk
    return data


def admit(policy: ProxyPolicy | None, sock: socket.socket, real: Endpoints,
          service: str) -> Endpoints | None:
    """The worker's one call: the client's endpoints, or None when the
    connection was refused (closed here, without a banner, logged once)."""
    if policy is None or not policy.applies(service, real.local_port):
        return real
    try:
        ends = policy.accept(sock, real)
    except Refused as exc:
        log.warning("proxy: closed %s without a banner: %s", real.peer, exc,
                    extra={"peer": real.peer, "service": service})
        with contextlib.suppress(OSError):
            sock.close()
        return None
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(None)
    if ends is not real:
        log.debug("proxy: client %s:%d via %s", ends.peer, ends.port, real.peer,
                  extra={"peer": ends.peer, "service": service})
    return ends
