"""One worker process: accept (EPOLLEXCLUSIVE, no thundering herd), per-IP
check in the registry, one SMTP session at a time through the engine,
heartbeat, lifeline; retire after its (jittered) lifetime.

Signals from the supervisor (handlers only set flags, or raise to leave a
blocking wait; never while holding anything):
  HUP   retire: finish the current session quietly, then exit (reload, surplus)
  TERM  stop: idle -> exit now; busy -> the engine says 421 at the next
        command once the transaction is done; a second TERM aborts
  USR1  abort: raise AbortSession in the session (the engine sends 421)
  INT   ignored: Ctrl-C reaches the whole process group, the supervisor
        turns it into an orderly TERM of its workers
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import random
import select
import signal
import socket
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

from qsmtp import gossip, proxy_gate, systemd
from qsmtp import log as qlog
from qsmtp.app import App
from qsmtp.listeners import Listener
from qsmtp.registry import Registry
from qsmtp.registry_layout import plain_ip
from qsmtp.smtp.control import AbortSession
from qsmtp.smtp.reader import close_gently
from qsmtp.smtp.session import SessionSummary, run_session
from qsmtp.smtp.state import ConnectionInfo

log = logging.getLogger("qsmtp.worker")

POLL_TIMEOUT = 1.0   # idle wake-up: heartbeat, flags, parent check
HEARTBEAT_EVERY = 1.0
ORPHAN_EXTRA = 0.5   # after grace, our own abort (the supervisor's USR1 comes first)
PR_SET_PDEATHSIG = 1


class _LeaveWait(Exception):
    """Raised by a signal handler to leave epoll.poll() (PEP 475 would
    otherwise retry it); only ever raised while waiting, never mid-session."""


class Control:
    """The engine's view of the worker (SessionControl)."""

    __slots__ = ("stopping", "_registry", "_slot", "_next")

    def __init__(self, registry: Registry, slot: int):
        self.stopping = False
        self._registry, self._slot, self._next = registry, slot, 0.0

    def touch(self) -> None:
        # Called on every command line / DATA chunk: one clock read, and a
        # registry write at most once a second.  CLOCK_MONOTONIC, as the
        # supervisor reads it (a wall-clock step is no silence).
        now = time.monotonic()
        if now >= self._next:
            self._next = now + HEARTBEAT_EVERY
            self._registry.heartbeat(self._slot, now)


def peer_of(address: tuple) -> tuple[str, int]:
    return plain_ip(address[0]), address[1]


class Worker:
    def __init__(self, *, app: App, listeners: list[Listener], registry: Registry,
                 slot: int, generation: int, lifetime: int, lifeline: int, wake: int,
                 ppid: int, base_nice: int | None, sigmask: Iterable[int]):
        self.app, self.listeners, self.registry = app, listeners, registry
        self.slot, self.generation, self.lifetime = slot, generation, lifetime
        self.lifeline, self.wake, self.ppid = lifeline, wake, ppid
        self.base_nice, self.sigmask = base_nice, sigmask
        self.server = app.config.server
        self.control = Control(registry, slot)
        self.served = 0
        self.stop = self.retire = self.waiting = self.in_session = False
        self.by_fd = {lst.fileno(): lst for lst in listeners}
        self.local = {fd: _bound_to(lst.sock) for fd, lst in self.by_fd.items()}
        self.pid = os.getpid()  # built in the forked child; gossip and logs name it
        self.proxy = proxy_gate.ProxyPolicy.from_config(app.config)  # None: off

    # ---- start -------------------------------------------------------------
    def setup(self) -> None:
        """Right after fork, before anything can reach a client."""
        # The supervisor forked us with its signals blocked: our handlers
        # first, then the mask it had (none of its handlers ever runs here).
        self._signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)
        random.seed()  # the supervisor's state is shared by every fork
        qlog.bind(role="worker")
        systemd.forget()
        self.registry.owner = False  # never "recover" the lock as a worker would
        _die_with_parent(self.ppid)
        if self.base_nice is not None:
            with contextlib.suppress(OSError):  # undo --renice-parent
                os.setpriority(os.PRIO_PROCESS, 0, self.base_nice)
        self.registry.set_slot(self.slot, self.pid, self.generation)
        self.registry.heartbeat(self.slot, time.monotonic())
        self._title("idle")

    def _signals(self) -> None:
        signal.signal(signal.SIGHUP, self._on_retire)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_abort)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2,
                    signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)

    # ---- signal handlers -------------------------------------------------------
    def _on_retire(self, signum: int, frame: FrameType | None) -> None:
        self.retire = True
        if self.waiting:
            raise _LeaveWait()

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        if self.stop and self.in_session:
            raise AbortSession()  # second TERM: no more grace
        self.stop = self.control.stopping = True
        # Our own grace deadline too: if the supervisor dies (PDEATHSIG sent
        # this TERM) nobody else would ever end a session left open.
        signal.signal(signal.SIGALRM, self._on_abort)
        signal.setitimer(signal.ITIMER_REAL, self.server.grace + ORPHAN_EXTRA)
        if self.waiting:
            raise _LeaveWait()

    def _on_abort(self, signum: int, frame: FrameType | None) -> None:
        self.stop = self.control.stopping = True
        if self.in_session:
            raise AbortSession()
        if self.waiting:
            raise _LeaveWait()

    # ---- main loop -----------------------------------------------------------
    def run(self) -> int:
        self.setup()
        poller = select.epoll()
        for fd in self.by_fd:
            poller.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        poller.register(self.lifeline, select.EPOLLIN)
        self._gossip(gossip.Kind.READY)
        while not (self.stop or self.retire) and self.served < self.lifetime:
            events = self._wait(poller)
            if events is None:
                continue
            if any(fd == self.lifeline for fd, _ in events):
                log.warning("supervisor gone; worker %d exits", self.pid)
                return 0
            for fd, _ in events:
                accepted = self._accept(fd)
                if accepted:
                    conn, address = accepted
                    self._serve(conn, address, fd)
                    break  # back to epoll: re-check flags and lifetime first
        log.debug("worker %d exits after %s", self.pid, qlog.plural(self.served, "session"))
        return 0

    def _wait(self, poller: select.epoll) -> list[tuple[int, int]] | None:
        self.registry.heartbeat(self.slot, time.monotonic())
        self.waiting = True
        try:
            if self.stop or self.retire:
                return None
            events = poller.poll(POLL_TIMEOUT)
        except _LeaveWait:
            return None
        finally:
            self.waiting = False
        # The parent check only on an idle tick, not per connection: while
        # connections come, the lifeline in this epoll set reports the
        # supervisor's death with them.
        if not events and os.getppid() != self.ppid:
            self.stop = True
            return None
        return events

    def _accept(self, fd: int) -> tuple[socket.socket, Any] | None:
        listener = self.by_fd.get(fd)
        if listener is None:
            return None
        try:
            return listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None  # another worker was faster: fine
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                # The supervisor shut a self-bound listener down (stop): the
                # socket no longer accepts, so this worker is done.
                self.stop = True
                return None
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EMFILE,
                             errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.warning("accept failed: %s", exc)
                time.sleep(0.05)
                return None
            raise

    # ---- one connection ------------------------------------------------------------
    def _serve(self, conn: socket.socket, address: Any, fd: int) -> None:
        # accept() gave a blocking socket without a timeout; the PROXY gate
        # sets its own and the session's Reader turns it non-blocking once.
        listener = self.by_fd[fd]
        peer, port = peer_of(address)
        local, local_port = self.local[fd] or peer_of(conn.getsockname())
        # A balancer's PROXY header names the client, before anything else.
        ends = proxy_gate.admit(self.proxy, conn,
                                proxy_gate.Endpoints(peer, port, local, local_port),
                                listener.service)
        if ends is None:
            return
        peer, port, local, local_port = ends.peer, ends.port, ends.local, ends.local_port
        if not self._admit(conn, peer, listener.service):
            return
        info = ConnectionInfo(peer, port, local, local_port, listener.service)
        if self._spares_short():
            self._gossip(gossip.Kind.BUSY)
        self._title("busy", peer)
        started = time.monotonic()
        summary: SessionSummary | None = None
        aborted = False
        try:
            self.in_session = True
            summary = run_session(self.app, conn, info, self.control)
        except AbortSession:
            aborted = True
        finally:
            self.in_session = False  # before anything else: no abort past this point
            close_gently(conn)  # the session's own close did it, unless aborted
        if aborted:
            log.info("session from %s aborted", peer, extra={"peer": peer})
        self.served += 1
        if self.stop:
            # Leaving: stop holding the listening sockets at once, so the
            # kernel stops queuing connections to a process that won't accept.
            for listener in self.listeners:
                _close(listener.sock)
        self.registry.mark_idle(self.slot, self.served)
        if self.served == 1:  # what the supervisor's boot-loop throttle waits for
            self._gossip(gossip.Kind.IDLE)
        self._title("idle")
        self._log_summary(summary, info, time.monotonic() - started)
        qlog.unbind()
        if summary is not None and summary.plugin_failed:
            log.warning("a plugin failed in this session; worker %d retires", self.pid)
            self.retire = True

    def _admit(self, conn: socket.socket, peer: str, service: str) -> bool:
        """The per-IP limit, checked atomically in the registry BEFORE the
        greeting: over the limit -> 421 and close, the slot stays idle."""
        refused = self.registry.mark_busy(self.slot, peer, service, self.server.max_from_ip)
        if refused is None:
            return True
        log.info("NOQUEUE: reject: CONNECT from unknown[%s]: 421 4.7.0 Too many connections; "
                 "%s from it already (max_from_ip)", peer, qlog.plural(refused, "session"),
                 extra={"peer": peer, "service": service})
        try:
            conn.settimeout(5)
            conn.sendall(f"421 4.7.0 Too many connections from {peer}\r\n".encode())
        except OSError:
            pass
        _close(conn)
        return False

    def _spares_short(self) -> bool:
        """Does the supervisor need to hear that we went busy?  Only to fork
        spares: it does when idle + starting workers fall below its idle
        target (policy.target_pool); above it, its next tick sees this slot
        busy anyway, and a wake-up per session costs it a registry read."""
        spares, target = self.registry.spares()
        return target > 0 and spares < target

    def _log_summary(self, summary: SessionSummary | None, info: ConnectionInfo,
                     elapsed: float) -> None:
        """One line per session; the per-message lines (queued as ...) and
        refusals came before it with the same session id."""
        if summary is None or not log.isEnabledFor(logging.INFO):
            return
        log.info("session %s: disconnect from %s[%s] service=%s helo=<%s> messages=%d "
                 "result=%s duration=%.3fs", summary.session_id, "unknown", info.peer_ip,
                 info.service, summary.helo or "", summary.messages, summary.result,
                 summary.duration or elapsed,
                 extra={"peer": info.peer_ip, "service": info.service,
                        "worker": self.pid, "queue_id": summary.queue_id})

    # ---- small helpers -----------------------------------------------------------
    def _gossip(self, kind: gossip.Kind) -> None:
        """Wake the supervisor at once (a burst must not wait for its tick)."""
        gossip.send(self.wake, kind, self.pid)

    def _title(self, state: str, peer: str | None = None) -> None:
        if self.server.pretty_child:
            _set_title(f"qsmtp: worker {state}" + (f" {peer}" if peer else ""))


def _bound_to(sock: socket.socket) -> tuple[str, int] | None:
    """A listener's address when every connection's local end is that
    address (saves a getsockname per connection); None for a wildcard."""
    try:
        local = peer_of(sock.getsockname())
    except (OSError, TypeError, IndexError):
        return None
    return None if local[0] in ("0.0.0.0", "::") else local


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def _set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


def _die_with_parent(ppid: int) -> None:
    """SIGTERM when the supervisor dies (a busy worker finishes its
    transaction, then leaves); the lifeline pipe covers idle workers."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != ppid:
        os.kill(os.getpid(), signal.SIGTERM)
