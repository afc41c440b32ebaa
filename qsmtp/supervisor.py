"""The arbiter (gunicorn arbiter.py / Postfix master style).

Signal handlers only append to a queue and write a byte to a self-pipe; the
main loop selects on that pipe and on the workers' shared "wake" pipe (their
gossip, qsmtp.gossip), then dispatches to handle_<sig>, reaps, and runs one
pool plan.  The workers themselves are the Fleet's (qsmtp.fleet): this module
owns the loop, signals, readiness/STATUS/watchdog, reload and stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType

from qsmtp import listeners as listeners_mod
from qsmtp import log as log_mod
from qsmtp import pidfile, policy, systemd, warmup
from qsmtp.app import App
from qsmtp.config import Config, ConfigError
from qsmtp.exitcodes import EX_OK, EX_SOFTWARE
from qsmtp.fleet import SIGNALS, Fleet
from qsmtp.listeners import Listener
from qsmtp.registry import Registry
from qsmtp.settings import ServerSettings

log = logging.getLogger("qsmtp.supervisor")

TICK = 0.5              # longest sleep of the main loop
STATUS_EVERY = 0.25     # STATUS= rate limit (the latest line is always sent)
HEARTBEAT_CHECK = 1.0
ABORT_WAIT = 5.0        # after the 421s (USR1), stragglers get SIGKILL
SIGNAMES: dict[int, str] = {sig: sig.name[3:].lower() for sig in SIGNALS}

# Reads the config file again and builds the App (reload); raises ConfigError.
Loader = Callable[[], tuple[Config, App]]


class Supervisor:
    def __init__(self, *, app: App, listeners: list[Listener], registry: Registry,
                 loader: Loader, pid_file: str = "", base_nice: int | None = None):
        self.listeners, self.registry = listeners, registry
        self.loader, self.pid_file = loader, pid_file
        # Signal self-pipe: the handler's write wakes the loop's select().
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.fleet = Fleet(app=app, listeners=listeners, registry=registry,
                           base_nice=base_nice, private_fds=(self.pipe_r, self.pipe_w))
        self.sig_queue: list[int] = []
        self.ready_sent = self.stopping = False
        self.grace_deadline: float | None = None
        self.kill_deadline: float | None = None
        self.status_line, self.status_sent, self.status_at = "", "", 0.0
        self.next_heartbeat_check = 0.0
        self.watchdog_every = systemd.watchdog_interval()
        self.next_watchdog = 0.0
        # _manage() reads the whole registry (~80 us): run it when something
        # may need a spawn (a worker went busy, became ready, exited; a
        # signal) and every STATUS_EVERY, not on every "idle again" gossip.
        self.manage_now, self.managed_at = True, 0.0
        self.started = time.monotonic()

    @property
    def server(self) -> ServerSettings:
        """The current generation's [server] section."""
        return self.fleet.server

    # ---- set-up ----------------------------------------------------------------
    def _install_signals(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        signal.siginterrupt(signal.SIGCHLD, False)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only enqueue and wake the loop: nothing here can deadlock.
        if len(self.sig_queue) < 32:
            self.sig_queue.append(signum)
        with contextlib.suppress(OSError):
            os.write(self.pipe_w, b".")

    # ---- main loop -----------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        listeners_mod.prepare_for_workers(self.listeners)
        self.registry.set_header(children=self.server.children,
                                 idle_children=self.fleet.idle_target,
                                 max_from_ip=self.server.max_from_ip, generation=1)
        self.registry.set_generation(1)
        # Before the first fork (after it, the supervisor's own copy of each
        # page the warm-up writes would add ~1.8 MiB to the idle fleet).
        warmup.warm_up(self.fleet.app.config)
        gc.freeze()  # objects loaded so far stay shared (copy-on-write) in workers
        config_path = self.fleet.app.config.path
        # `qsmtpctl config show` names the sockets really served (systemd's).
        self.registry.publish(config=config_path, listeners=[
            {"address": lst.address, "service": lst.service, "systemd": lst.inherited}
            for lst in self.listeners])
        log.info("supervisor %d: config %s; %s; up to %s, %d idle", os.getpid(),
                 config_path or "(built-in defaults)",
                 listeners_mod.describe(self.listeners),
                 log_mod.plural(self.server.children, "worker"),
                 self.fleet.idle_target)
        try:
            self._manage()  # the first workers now, not after a tick
            while True:
                self._sleep()
                if self.sig_queue:
                    self.manage_now = True
                self._dispatch_signals()
                workers = len(self.fleet.workers)
                self.fleet.reap()
                if self.stopping:
                    if self._stop_progress():
                        break
                    continue
                now = time.monotonic()
                if self.manage_now or len(self.fleet.workers) != workers \
                        or now - self.managed_at >= STATUS_EVERY:
                    self.manage_now, self.managed_at = False, now
                    self._manage()
                self._housekeeping()
        except Exception:
            log.exception("supervisor failed; stopping the workers")
            self.fleet.kill_all(signal.SIGKILL)
            self.fleet.reap_all()
            self._cleanup()
            return EX_SOFTWARE
        self._cleanup()
        log.info("stopped")
        return EX_OK

    def _sleep(self) -> None:
        timeout = 0.0 if self.sig_queue else self._timeout()
        try:
            readable, _, _ = select.select([self.pipe_r, self.fleet.wake_r], [], [], timeout)
        except InterruptedError:
            return
        if self.pipe_r in readable:
            _drain(self.pipe_r)
        if self.fleet.wake_r in readable and self.fleet.read_gossip(_drain(self.fleet.wake_r)):
            self.manage_now = True

    def _timeout(self) -> float:
        timeout = TICK
        if self.status_line != self.status_sent:
            timeout = min(timeout, max(0.0, self.status_at + STATUS_EVERY - time.monotonic()))
        return timeout

    def _dispatch_signals(self) -> None:
        while self.sig_queue:
            signum = self.sig_queue.pop(0)
            handler = getattr(self, f"handle_{SIGNAMES.get(signum, '')}", None)
            if handler:
                handler()

    # ---- signal handlers (run from the loop, never from the signal) -------------
    def handle_chld(self) -> None:
        pass  # the loop reaps after every dispatch

    def handle_hup(self) -> None:
        if not self.stopping:
            self.reload()

    def handle_term(self) -> None:
        if self.stopping:
            self._abort_sessions()  # a second TERM: no more grace
        else:
            self.begin_stop()

    handle_int = handle_term

    def handle_ttin(self) -> None:
        fleet = self.fleet
        fleet.idle_target = min(self.server.children, fleet.idle_target + 1)
        self.registry.set_header(idle_children=fleet.idle_target)
        log.info("idle workers target now %d", fleet.idle_target)

    def handle_ttou(self) -> None:
        """One fewer spare: the longest-idle worker retires now if the pool
        is above its new target (not at the next idle sweep)."""
        fleet = self.fleet
        fleet.idle_target = max(0, fleet.idle_target - 1)
        self.registry.set_header(idle_children=fleet.idle_target)
        fleet.trim()
        log.info("idle workers target now %d", fleet.idle_target)

    def handle_usr2(self) -> None:
        log.info("pool: %s", self.status_line)

    # ---- pool, readiness, status, watchdog, heartbeats -------------------------------
    def _manage(self) -> None:
        self.status_line = self.fleet.manage()
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        if self.ready_sent:
            self._send_status()
            return
        wanted = policy.target_pool(0, self.server.children, self.fleet.idle_target)
        if self.fleet.ready_count() >= wanted:
            self.ready_sent = True
            self.registry.set_state("running")
            systemd.ready(self.status_line)
            self.status_sent, self.status_at = self.status_line, time.monotonic()
            log.info("ready after %.3fs: %s", time.monotonic() - self.started,
                     self.status_line)

    def _send_status(self) -> None:
        now = time.monotonic()
        if self.status_line != self.status_sent and now >= self.status_at + STATUS_EVERY:
            systemd.status(self.status_line)
            self.status_sent, self.status_at = self.status_line, now

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.watchdog_every and now >= self.next_watchdog:
            systemd.watchdog()
            self.next_watchdog = now + self.watchdog_every
        if now >= self.next_heartbeat_check:
            self.next_heartbeat_check = now + HEARTBEAT_CHECK
            self.registry.check_lock()
            self.fleet.check_heartbeats()

    # ---- reload ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Validate first; only a good config starts a new generation."""
        log.info("reloading (generation %d)", self.fleet.generation)
        systemd.reloading()
        self.registry.set_state("reloading")
        try:
            config, app = self.loader()
        except ConfigError as exc:
            log.error("reload failed, generation %d keeps serving: %s",
                      self.fleet.generation, exc)
            self.registry.set_reload("failed", f"{exc.key}: {exc.reason}", whole=str(exc))
            self.registry.set_state("running")
            systemd.ready(self.status_line)
            return
        self._warn_fixed_settings(config)
        retiring = self.fleet.new_generation(app)
        self.registry.set_header(children=self.server.children,
                                 idle_children=self.fleet.idle_target,
                                 max_from_ip=self.server.max_from_ip)
        self.registry.set_generation(self.fleet.generation)
        # The supervisor never collects on its own (qsmtp.cli): what loading
        # the config left in cycles goes now, before the new workers fork.
        gc.collect()
        gc.freeze()
        self._manage()  # the new generation, at once
        self.registry.set_reload("ok")
        self.registry.set_state("running")
        systemd.ready(self.status_line)
        log.info("reloaded: generation %d, %d old workers retiring", self.fleet.generation,
                 retiring)

    def _warn_fixed_settings(self, config: Config) -> None:
        old = self.server
        new = config.server
        if (old.listen, old.port) != (new.listen, new.port) and not any(
                lst.inherited for lst in self.listeners):
            log.warning("server.listen changed: the listening sockets stay as they are "
                        "until a restart")
        for name in ("user", "pid_file", "runtime_dir"):
            if getattr(old, name) != getattr(new, name):
                log.warning("server.%s changed: takes effect at the next restart", name)
        if new.children * 2 > self.registry.slots:
            log.warning("server.children %d exceeds the registry made at start; "
                        "a restart is needed to grow beyond %d", new.children,
                        self.registry.slots // 2)
            # Sections are frozen: this reload's config gets a clamped copy.
            config.server = dataclasses.replace(new, children=self.registry.slots // 2)

    # ---- stop ----------------------------------------------------------------------------------
    def begin_stop(self) -> None:
        """TERM/INT: spawn nothing more, let sessions finish within `grace`."""
        log.info("stopping: %s, grace %ds", log_mod.plural(len(self.fleet.workers), "worker"),
                 self.server.grace)
        self.stopping = True
        systemd.stopping()
        self.registry.set_state("stopping")
        # Our copies only; inherited sockets stay systemd's (never shutdown()).
        listeners_mod.close_all(self.listeners, stop_listening=True)
        self.grace_deadline = time.monotonic() + self.server.grace
        self.fleet.stop()

    def _abort_sessions(self) -> None:
        if self.kill_deadline is None:
            if self.fleet.workers:
                log.warning("grace over: 421 to %s still open",
                            log_mod.plural(len(self.fleet.workers), "session"))
            self.fleet.kill_all(signal.SIGUSR1)
            self.kill_deadline = time.monotonic() + ABORT_WAIT

    def _stop_progress(self) -> bool:
        """True once every worker is reaped."""
        if not self.fleet.workers:
            return True
        now = time.monotonic()
        if self.kill_deadline is not None and now >= self.kill_deadline:
            log.error("SIGKILL to %s that did not stop",
                      log_mod.plural(len(self.fleet.workers), "worker"))
            self.fleet.kill_all(signal.SIGKILL)
            self.kill_deadline = now + ABORT_WAIT
        elif self.grace_deadline is not None and now >= self.grace_deadline:
            self._abort_sessions()
        return False

    def _cleanup(self) -> None:
        self.registry.remove()
        if self.pid_file:
            pidfile.remove(self.pid_file)


def _drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)
