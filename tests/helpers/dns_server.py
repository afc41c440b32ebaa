"""A real authoritative DNS server on loopback for tests (dnspython, UDP+TCP).

    with DnsServer({"2.0.0.127.bl.test": {"A": ["127.0.0.2"], "TXT": ["listed"]}}) as dns:
        options = {"nameservers": [dns.host], "dns_port": dns.port}

Records: {owner name: {rdtype: [rdata text, ...]}}; names are absolute or
relative to nothing (a trailing dot is optional) and case-insensitive.  Or
`DnsServer.from_zone_text(text, origin)` (names outside `origin` are
dropped by the zone parser: use origin "." for a mix of zones).  Unknown names get NXDOMAIN; a name
that exists (or has names below it) without the asked type gets NOERROR with
no answer.  Faults: `servfail` (names answered SERVFAIL), `drop` (names never
answered: the client times out), `truncate_udp` (UDP answers come back with
TC set, forcing the client over to TCP).  `queries` records what was asked
as (name, type, "udp"|"tcp").
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

Records = dict[str, dict[str, list[str]]]


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


class DnsServer:
    def __init__(self, records: Records | None = None, *, host: str = "127.0.0.1",
                 servfail: Iterable[str] = (), drop: Iterable[str] = (),
                 truncate_udp: bool = False, ttl: int = 60):
        self.host = host
        self.records: Records = {}
        for name, types in (records or {}).items():
            self.add(name, types)
        self.servfail = {_key(n) for n in servfail}
        self.drop = {_key(n) for n in drop}
        self.truncate_udp = truncate_udp
        self.ttl = ttl
        self.queries: list[tuple[str, str, str]] = []
        self.port = 0
        self._servers: list[socketserver.BaseServer] = []
        self._lock = threading.Lock()

    @classmethod
    def from_zone_text(cls, text: str, origin: str, **kwargs) -> DnsServer:
        zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)
        records: Records = {}
        for name, node in zone.nodes.items():
            for rdataset in node.rdatasets:
                kind = dns.rdatatype.to_text(rdataset.rdtype)
                records.setdefault(name.to_text(), {}).setdefault(kind, []).extend(
                    r.to_text() for r in rdataset)
        return cls(records, **kwargs)

    def add(self, name: str, types: dict[str, list[str]]) -> None:
        entry = self.records.setdefault(_key(name), {})
        for kind, values in types.items():
            kind = kind.upper()
            if kind == "TXT":  # plain text -> one quoted character-string
                values = [v if v.startswith('"') else
                          '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values]
            entry.setdefault(kind, []).extend(values)

    # -- answering -----------------------------------------------------
    def answer(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text().lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name.rstrip("."), kind, transport))
        if name in self.drop:
            return None
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if transport == "udp" and self.truncate_udp:
            response.flags |= dns.flags.TC
            return response.to_wire()
        types = self.records.get(name)
        if types is None and not any(k.endswith("." + name) for k in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif types and kind in types:
            rrset = dns.rrset.from_text_list(question.name, self.ttl, dns.rdataclass.IN,
                                             kind, types[kind])
            response.answer.append(rrset)
        return response.to_wire()

    # -- lifecycle -----------------------------------------------------
    def start(self) -> DnsServer:
        owner = self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                reply = owner.answer(data, "udp")
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                while True:
                    head = _recv_exact(self.request, 2)
                    if not head:
                        return
                    data = _recv_exact(self.request, struct.unpack("!H", head)[0])
                    if data is None:
                        return
                    reply = owner.answer(data, "tcp")
                    if reply is None:
                        return
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        # UDP answered in the serving thread: a thread per datagram cost
        # more CPU than the answer itself (the bench's case (f) shares this
        # server among the servers compared).
        class UdpServer(socketserver.UDPServer):
            address_family = family

        class TcpServer(socketserver.ThreadingTCPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(20):  # UDP and TCP must share one (random) port
            udp = UdpServer((self.host, 0), Udp)
            port = udp.server_address[1]
            try:
                tcp = TcpServer((self.host, port), Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP")
        self.port = port
        self._servers = [udp, tcp]
        for server in self._servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def options(self, timeout: float = 2.0) -> dict:
        """Plugin options pointing a qsmtp DNS plugin at this server."""
        return {"nameservers": [self.host], "dns_port": self.port, "dns_timeout": timeout}


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
