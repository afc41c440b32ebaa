"""Listening sockets: inherited from systemd (LISTEN_FDS), or bound from the
`listen` setting.  Either way the rest of the program sees [Listener].

Inherited sockets belong to systemd's .socket unit: we never call listen()
or shutdown() on them (that would change or kill the socket systemd keeps
queuing on across our restarts); closing our copy is all we ever do.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass

from qsmtp import systemd
from qsmtp.settings import parse_listen

log = logging.getLogger("qsmtp.listeners")

DEFAULT_SERVICE = "smtp"


class ListenError(Exception):
    """A listen address cannot be bound (in use, not ours...)."""


@dataclass
class Listener:
    sock: socket.socket
    service: str
    inherited: bool

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def fileno(self) -> int:
        return self.sock.fileno()


def open_listeners(listen: list[str], port: int) -> list[Listener]:
    """systemd's sockets when we were socket-activated, else bind `listen`."""
    inherited = inherit()
    if inherited:
        if listen:
            log.debug("sockets from systemd; server.listen is ignored")
        return inherited
    return bind_all(listen, port)


def inherit() -> list[Listener]:
    listeners = []
    for fd, name in sorted(systemd.listen_fds().items()):
        sock = socket.socket(fileno=fd)  # family/type detected from the fd
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            log.warning("ignoring inherited fd %d (%s): not a listening stream socket",
                        fd, name)
            sock.detach()  # leave the fd alone
            continue
        listeners.append(Listener(sock, name, inherited=True))
    return listeners


def bind_all(entries: list[str], default_port: int) -> list[Listener]:
    addresses = [parse_listen(entry, default_port) for entry in entries]
    listeners: list[Listener] = []
    try:
        for host, port in addresses:
            # `[::]` is dual stack unless 0.0.0.0 on the same port is also
            # listed (then both would collide on the IPv4 side); a v4-mapped
            # address can only be bound with V6ONLY off.
            dual = host == "::" and ("0.0.0.0", port) not in addresses
            v6only = not (dual or host.lower().startswith("::ffff:"))
            listeners.append(Listener(bind_one(host, port, v6only), DEFAULT_SERVICE,
                                      inherited=False))
    except BaseException:
        close_all(listeners)
        raise
    return listeners


def bind_one(host: str, port: int, v6only: bool = True) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    except socket.gaierror as exc:
        raise ListenError(f"cannot resolve listen address {host}: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        sock.bind(sockaddr)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ListenError(f"cannot listen on {shown}: {exc.strerror or exc}") from None
    return sock


def prepare_for_workers(listeners: list[Listener]) -> None:
    """Workers accept from epoll and must never block in accept() when
    another worker took the connection first."""
    for listener in listeners:
        listener.sock.setblocking(False)


def close_all(listeners: list[Listener], stop_listening: bool = False) -> None:
    """Close our copies.  `stop_listening` (at stop): a socket we bound
    ourselves also leaves the LISTEN state at once, although busy workers
    still hold copies, so new clients are refused (and try the next MX)
    instead of waiting unanswered through the grace period."""
    for listener in listeners:
        if stop_listening and not listener.inherited:
            with contextlib.suppress(OSError):
                listener.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            listener.sock.close()  # never shutdown(): inherited ones are systemd's


def describe(listeners: list[Listener]) -> str:
    return ", ".join(f"{ln.address} ({ln.service}{', systemd' if ln.inherited else ''})"
                     for ln in listeners)
