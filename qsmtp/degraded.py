"""The "config invalid" mode of a socket-activated supervisor.

Under systemd an invalid config at start must not close port 25: exiting
78 makes systemd restart us until the start limit, then qsmtp.socket fails
and the port refuses connections (senders bounce or defer without a word).
Instead the supervisor stays up on the inherited sockets and answers every
connection with a 421 (senders queue and retry), tells systemd (READY=1,
STATUS=config invalid: ...), the journal (one line) and qsmtpctl (a
registry in state "config-invalid" with no worker; the whole reason in the
published file).  HUP re-reads the file: once it is valid, `run()` returns
the new (config, app) and the caller becomes the normal supervisor in the
same process, on the same sockets (same pid: systemd's MAINPID holds).

A self-bound server (no systemd) has no socket to keep: it exits 78.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from types import FrameType

from qsmtp import systemd
from qsmtp.app import App
from qsmtp.config import Config, ConfigError
from qsmtp.listeners import Listener
from qsmtp.registry import Registry, RegistryError
from qsmtp.supervisor import Loader

log = logging.getLogger("qsmtp.supervisor")

STATE = "config-invalid"
TICK = 1.0
SEND_TIMEOUT = 1.0  # a client that does not read its 421 is not waited for


def reply(host: str) -> bytes:
    return f"421 4.3.0 {host} configuration error, try again later\r\n".encode()


def describe(error: ConfigError) -> str:
    return f"config invalid: {error}"


class ConfigInvalid:
    def __init__(self, *, error: ConfigError, listeners: list[Listener], loader: Loader,
                 runtime_dir: str, host: str, config_path: str | None):
        self.error, self.listeners, self.loader = error, listeners, loader
        self.runtime_dir, self.reply = runtime_dir, reply(host)
        self.config_path = config_path
        self.registry: Registry | None = None
        self.signals: list[int] = []
        self.answered = 0

    # ---- life cycle ----------------------------------------------------------
    def run(self) -> tuple[Config, App] | None:
        """Serve 421s until a valid config (-> (config, app)) or TERM (-> None)."""
        pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old = {sig: signal.signal(sig, self._on_signal)
               for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
        old_fd = signal.set_wakeup_fd(pipe_w)
        for listener in self.listeners:
            listener.sock.setblocking(False)
        self._open_registry()
        self._announce(first=True)
        try:
            return self._loop(pipe_r)
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            os.close(pipe_r)
            os.close(pipe_w)
            if self.registry is not None:
                self.registry.remove()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if len(self.signals) < 8:
            self.signals.append(signum)

    def _loop(self, pipe_r: int) -> tuple[Config, App] | None:
        watchdog_every = systemd.watchdog_interval()
        next_watchdog = 0.0
        fds = [pipe_r] + [lst.fileno() for lst in self.listeners]
        while True:
            now = time.monotonic()
            if watchdog_every and now >= next_watchdog:
                systemd.watchdog()
                next_watchdog = now + watchdog_every
            try:
                readable, _, _ = select.select(fds, [], [], TICK)
            except InterruptedError:
                readable = []
            if pipe_r in readable:
                _drain(pipe_r)
            for listener in self.listeners:
                if listener.fileno() in readable:
                    self._answer(listener.sock)
            while self.signals:
                signum = self.signals.pop(0)
                if signum != signal.SIGHUP:
                    log.info("stopping (config invalid; %d connections answered 421)",
                             self.answered)
                    systemd.stopping()
                    return None
                loaded = self._retry()
                if loaded is not None:
                    return loaded

    def _answer(self, sock: socket.socket) -> None:
        """Every queued connection: the 421, then close."""
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ECONNABORTED, EMFILE...: the next one may work
                log.debug("accept failed: %s", exc)
                return
            try:
                conn.settimeout(SEND_TIMEOUT)
                conn.sendall(self.reply)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finally:
                conn.close()
            self.answered += 1

    # ---- HUP: the file again ------------------------------------------------
    def _retry(self) -> tuple[Config, App] | None:
        systemd.reloading()
        try:
            loaded = self.loader()
        except ConfigError as exc:
            self.error = exc
            self._announce(first=False)
            return None
        log.info("config valid again (%s): starting the workers; %d connections "
                 "were answered 421", self.config_path or "built-in defaults", self.answered)
        return loaded

    # ---- telling systemd, the journal and qsmtpctl ---------------------------------
    def _open_registry(self) -> None:
        try:
            self.registry = Registry.create(self.runtime_dir, 1, os.getpid())
            self.registry.set_header(children=0)
            self.registry.set_state(STATE)
        except (RegistryError, OSError) as exc:  # 421s matter more than status
            log.warning("no registry for qsmtpctl: %s", exc)
            self.registry = None

    def _announce(self, first: bool) -> None:
        text = describe(self.error)
        if first:
            log.error("%s; every connection gets 421 until it is fixed "
                      "(then: systemctl reload qsmtp)", text)
            systemd.ready(text)
        else:
            log.error("reload failed, still %s", text)
            systemd.ready(text)
        if self.registry is not None:
            self.registry.publish(config=self.config_path, config_error=str(self.error))
            if not first:
                self.registry.set_reload("failed", f"{self.error.key}: {self.error.reason}",
                                        whole=str(self.error))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass
