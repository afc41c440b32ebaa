"""The arbiter (gunicorn arbiter.py / Postfix master style).

Signal handlers only append to a queue and write a byte to a self-pipe; the
main loop selects on that pipe and on the workers' shared "wake" pipe (their
busy/idle gossip), then dispatches to handle_<sig>, reaps, and runs one pool
plan (qsmtp.policy).  Worker reports are gossip; waitpid is the truth: a
registry slot is released only after its pid was reaped.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import select
import signal
import time
from typing import Callable

from qsmtp import listeners as listeners_mod
from qsmtp import log as log_mod
from qsmtp import pidfile, policy, systemd
from qsmtp.config import ConfigError
from qsmtp.exitcodes import EX_SOFTWARE
from qsmtp.fleet import SIGNALS, FleetMixin, WorkerRec, _kill
from qsmtp.worker import BUSY, IDLE, READY

log = logging.getLogger("qsmtp.supervisor")

TICK = 0.5              # longest sleep of the main loop
STATUS_EVERY = 0.25     # STATUS= rate limit (the latest line is always sent)
HEARTBEAT_CHECK = 1.0
ABORT_WAIT = 5.0        # after the 421s (USR1), stragglers get SIGKILL
SIGNAMES = {sig: sig.name[3:].lower() for sig in SIGNALS}

Loader = Callable[[], "tuple[object, object]"]  # () -> (Config, App), ConfigError


class Supervisor(FleetMixin):
    def __init__(self, *, app, listeners, registry, loader: Loader,
                 pid_file: str = "", base_nice: int | None = None):
        self.app, self.listeners, self.registry = app, listeners, registry
        self.loader, self.pid_file, self.base_nice = loader, pid_file, base_nice
        self.server = app.config.server
        self.idle_target = self.server.idle_children
        self.generation = 1
        self.workers: dict[int, WorkerRec] = {}
        self.sig_queue: list[int] = []
        self.throttle = policy.BootLoopThrottle()
        self.surplus_since: float | None = None
        self.rng = random.Random()
        self.ready_sent = self.stopping = False
        self.grace_deadline = self.kill_deadline = None
        self.status_line, self.status_sent, self.status_at = "", "", 0.0
        self.next_heartbeat_check = 0.0
        self.watchdog_every = systemd.watchdog_interval()
        self.next_watchdog = 0.0
        self.wake_buffer = b""
        # _manage() reads the whole registry (~80 us): run it when something
        # may need a spawn (a worker went busy, became ready, exited; a
        # signal) and every STATUS_EVERY, not on every "idle again" gossip.
        self.manage_now, self.managed_at = True, 0.0
        self.started = time.monotonic()

    # ---- set-up ----------------------------------------------------------------
    def _pipes(self) -> None:
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Lifeline: workers hold the read end; our death -> EOF -> they exit.
        self.lifeline_r, self.lifeline_w = os.pipe2(os.O_CLOEXEC)

    def _install_signals(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        signal.siginterrupt(signal.SIGCHLD, False)

    def _on_signal(self, signum, frame) -> None:
        # Only enqueue and wake the loop: nothing here can deadlock.
        if len(self.sig_queue) < 32:
            self.sig_queue.append(signum)
        try:
            os.write(self.pipe_w, b".")
        except OSError:
            pass

    # ---- main loop -----------------------------------------------------------------
    def run(self) -> int:
        self._pipes()
        self._install_signals()
        listeners_mod.prepare_for_workers(self.listeners)
        self.registry.set_header(children=self.server.children,
                                 idle_children=self.idle_target,
                                 max_from_ip=self.server.max_from_ip, generation=1)
        self.registry.set_generation(1)
        gc.freeze()  # objects loaded so far stay shared (copy-on-write) in workers
        config_path = self.app.config.path
        # `qsmtpctl config show` names the sockets really served (systemd's).
        self.registry.publish(config=config_path, listeners=[
            {"address": l.address, "service": l.service, "systemd": l.inherited}
            for l in self.listeners])
        log.info("supervisor %d: config %s; %s; up to %s, %d idle", os.getpid(),
                 config_path or "(built-in defaults)",
                 listeners_mod.describe(self.listeners),
                 log_mod.plural(self.server.children, "worker"),
                 self.idle_target)
        try:
            self._manage()  # the first workers now, not after a tick
            while True:
                self._sleep()
                if self.sig_queue:
                    self.manage_now = True
                self._dispatch_signals()
                workers = len(self.workers)
                self._reap()
                if self.stopping:
                    if self._stop_progress():
                        break
                    continue
                now = time.monotonic()
                if self.manage_now or len(self.workers) != workers \
                        or now - self.managed_at >= STATUS_EVERY:
                    self.manage_now, self.managed_at = False, now
                    self._manage()
                self._housekeeping()
        except Exception:
            log.exception("supervisor failed; stopping the workers")
            self._kill_all(signal.SIGKILL)
            self._reap_all()
            self._cleanup()
            return EX_SOFTWARE
        self._cleanup()
        log.info("stopped")
        return 0

    def _sleep(self) -> None:
        timeout = 0.0 if self.sig_queue else self._timeout()
        try:
            readable, _, _ = select.select([self.pipe_r, self.wake_r], [], [], timeout)
        except InterruptedError:
            return
        if self.pipe_r in readable:
            _drain(self.pipe_r)
        if self.wake_r in readable:
            self._read_gossip()

    def _timeout(self) -> float:
        timeout = TICK
        if self.status_line != self.status_sent:
            timeout = min(timeout, max(0.0, self.status_at + STATUS_EVERY - time.monotonic()))
        return timeout

    def _read_gossip(self) -> None:
        data = self.wake_buffer + _drain(self.wake_r)
        usable = len(data) - len(data) % 5
        self.wake_buffer = data[usable:]
        for at in range(0, usable, 5):
            kind, pid = data[at:at + 1], int.from_bytes(data[at + 1:at + 5], "little")
            rec = self.workers.get(pid)
            if rec is None:
                continue
            if kind == READY:
                rec.ready = self.manage_now = True
            elif kind == IDLE:
                self.throttle.record_healthy()  # a whole session worked
            elif kind == BUSY:
                rec.ready = self.manage_now = True

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
        self.idle_target = min(self.server.children, self.idle_target + 1)
        self.registry.set_header(idle_children=self.idle_target)
        log.info("idle workers target now %d", self.idle_target)

    def handle_ttou(self) -> None:
        """One fewer spare: the longest-idle worker retires now if the pool
        is above its new target (not at the next idle sweep)."""
        self.idle_target = max(0, self.idle_target - 1)
        self.registry.set_header(idle_children=self.idle_target)
        pool = self._pool_view(self.registry.snapshot())
        if pool.total > policy.target_pool(pool.busy, self.server.children, self.idle_target):
            for pid in policy.longest_idle(pool, 1):
                self._retire(pid)
        log.info("idle workers target now %d", self.idle_target)

    def handle_usr2(self) -> None:
        log.info("pool: %s", self.status_line)

    # ---- readiness, status, watchdog, heartbeats ------------------------------------------
    def _maybe_ready(self) -> None:
        if self.ready_sent:
            self._send_status()
            return
        wanted = policy.target_pool(0, self.server.children, self.idle_target)
        ready = sum(1 for r in self.workers.values()
                    if r.ready and r.generation == self.generation)
        if ready >= wanted:
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
            self._check_heartbeats()

    # ---- reload ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Validate first; only a good config starts a new generation."""
        log.info("reloading (generation %d)", self.generation)
        systemd.reloading()
        self.registry.set_state("reloading")
        try:
            config, app = self.loader()
        except ConfigError as exc:
            log.error("reload failed, generation %d keeps serving: %s", self.generation, exc)
            self.registry.set_reload("failed", f"{exc.key}: {exc.reason}", whole=str(exc))
            self.registry.set_state("running")
            systemd.ready(self.status_line)
            return
        self._warn_fixed_settings(config)
        self.app, self.server = app, config.server
        self.idle_target = self.server.idle_children
        self.generation += 1
        self.registry.set_header(children=self.server.children,
                                 idle_children=self.idle_target,
                                 max_from_ip=self.server.max_from_ip)
        self.registry.set_generation(self.generation)
        old = [rec.pid for rec in self.workers.values() if rec.generation < self.generation]
        for pid in old:
            self._retire(pid)  # idle ones exit now, busy ones after their session
        gc.freeze()
        self._manage()  # the new generation, at once
        self.registry.set_reload("ok")
        self.registry.set_state("running")
        systemd.ready(self.status_line)
        log.info("reloaded: generation %d, %d old workers retiring", self.generation, len(old))

    def _warn_fixed_settings(self, config) -> None:
        old = self.app.config.server
        new = config.server
        if (old.listen, old.port) != (new.listen, new.port) and not any(
                l.inherited for l in self.listeners):
            log.warning("server.listen changed: the listening sockets stay as they are "
                        "until a restart")
        for name in ("user", "pid_file", "runtime_dir"):
            if getattr(old, name) != getattr(new, name):
                log.warning("server.%s changed: takes effect at the next restart", name)
        if new.children * 2 > self.registry.slots:
            log.warning("server.children %d exceeds the registry made at start; "
                        "a restart is needed to grow beyond %d", new.children,
                        self.registry.slots // 2)
            new.children = self.registry.slots // 2

    # ---- stop ----------------------------------------------------------------------------------
    def begin_stop(self) -> None:
        """TERM/INT: spawn nothing more, let sessions finish within `grace`."""
        log.info("stopping: %s, grace %ds", log_mod.plural(len(self.workers), "worker"),
                 self.server.grace)
        self.stopping = True
        systemd.stopping()
        self.registry.set_state("stopping")
        # Our copies only; inherited sockets stay systemd's (never shutdown()).
        listeners_mod.close_all(self.listeners, stop_listening=True)
        self.grace_deadline = time.monotonic() + self.server.grace
        self._kill_all(signal.SIGTERM)

    def _abort_sessions(self) -> None:
        if self.kill_deadline is None:
            if self.workers:
                log.warning("grace over: 421 to %s still open",
                            log_mod.plural(len(self.workers), "session"))
            self._kill_all(signal.SIGUSR1)
            self.kill_deadline = time.monotonic() + ABORT_WAIT

    def _stop_progress(self) -> bool:
        """True once every worker is reaped."""
        if not self.workers:
            return True
        now = time.monotonic()
        if self.kill_deadline is not None and now >= self.kill_deadline:
            log.error("SIGKILL to %s that did not stop",
                      log_mod.plural(len(self.workers), "worker"))
            self._kill_all(signal.SIGKILL)
            self.kill_deadline = now + ABORT_WAIT
        elif self.grace_deadline is not None and now >= self.grace_deadline:
            self._abort_sessions()
        return False

    def _kill_all(self, sig: int) -> None:
        for pid in list(self.workers):
            _kill(pid, sig)

    def _reap_all(self) -> None:
        for pid in list(self.workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.workers.pop(pid, None)

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
