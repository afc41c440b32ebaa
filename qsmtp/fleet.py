"""The worker processes, as the supervisor owns them: fork, reap, retire,
heartbeats, the workers' gossip, and one pool plan per tick (the decisions
themselves are qsmtp.policy's).

`Fleet` holds all of that state; the Supervisor owns one Fleet and drives it
from its loop.  Worker reports (registry states, gossip on the wake pipe) are
hints; waitpid is the truth: a slot is released only after its pid was reaped.

Times are CLOCK_MONOTONIC (`time.monotonic()`, system-wide on Linux, so the
workers' heartbeats in the registry compare with ours): a wall-clock step
must not look like every worker went silent.  Only what qsmtpctl displays
(throttled_until) is converted to wall-clock time.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qsmtp import gossip, policy
from qsmtp.app import App
from qsmtp.exitcodes import EX_SOFTWARE
from qsmtp.listeners import Listener
from qsmtp.registry import Registry, RegistryError
from qsmtp.settings import ServerSettings
from qsmtp.worker import Worker

log = logging.getLogger("qsmtp.supervisor")

# The supervisor's signals: blocked around fork, so none of its handlers
# runs in a child before the worker installs its own.
SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGCHLD, signal.SIGUSR2)


@dataclass
class WorkerRec:
    pid: int
    slot: int
    generation: int
    started: float       # time.monotonic() at fork
    ready: bool = False  # gossip: it reached its accept loop
    retiring: bool = False


class Fleet:
    def __init__(self, *, app: App, listeners: list[Listener], registry: Registry,
                 base_nice: int | None, private_fds: tuple[int, ...] = ()):
        self.app, self.listeners, self.registry = app, listeners, registry
        self.base_nice = base_nice
        self.private_fds = private_fds  # the supervisor's own: closed in every worker
        self.generation = 1
        self.idle_target = app.config.server.idle_children
        self.workers: dict[int, WorkerRec] = {}
        self.throttle = policy.BootLoopThrottle()
        self.surplus_since: float | None = None
        self.throttled_until: float | None = None  # as last written to the registry
        self.stopping = False  # deaths are expected now, not failures
        self.rng = random.Random()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Lifeline: workers hold the read end; our death -> EOF -> they exit.
        self.lifeline_r, self.lifeline_w = os.pipe2(os.O_CLOEXEC)
        self.gossip = gossip.Decoder()

    @property
    def server(self) -> ServerSettings:
        """The current generation's [server] section."""
        return self.app.config.server

    # ---- the pool ------------------------------------------------------------
    def pool_view(self, snap: dict[str, Any]) -> policy.PoolView:
        """The current generation's workers not told to retire, with their
        registry state (a fresh fork has none yet: "starting")."""
        slots = {w["slot"]: w for w in snap["workers"]}
        views = []
        for rec in self.workers.values():
            if rec.retiring or rec.generation != self.generation:
                continue
            slot = slots.get(rec.slot)
            if slot is None or slot["pid"] != rec.pid:
                state, since = "starting", 0.0
            else:
                state, since = slot["state"], slot["since"]
            views.append(policy.WorkerView(rec.pid, state, since))
        return policy.PoolView.of(views)

    def manage(self) -> str:
        """One pool plan: spawn, retire; -> the STATUS line."""
        snap = self.registry.snapshot()
        pool = self.pool_view(snap)
        now = time.monotonic()
        size = policy.PoolSize(self.server.children, self.idle_target)
        plan = policy.plan(pool, size, now, surplus_since=self.surplus_since,
                           throttle=self.throttle)
        self.surplus_since = plan.surplus_since
        self._show_throttle(plan.throttled_until, now)
        for _ in range(plan.spawn):
            if not self.spawn():
                break
        for pid in plan.retire:
            self.retire(pid)
        if plan.spawn or plan.retire:
            snap = self.registry.snapshot()
            pool = self.pool_view(snap)
        total = pool.total + sum(1 for r in self.workers.values() if r.retiring)
        return policy.status_line(total, pool.busy, pool.idle, self.server.children,
                                  snap["supervisor"]["sessions_total"],
                                  self.throttle.status_text(now))

    def _show_throttle(self, until: float | None, now: float) -> None:
        """The boot-loop back-off, for qsmtpctl: wall-clock time in the
        registry (0 = none), written when it changes."""
        if until == self.throttled_until:
            return
        self.throttled_until = until
        shown = 0.0 if until is None else time.time() + (until - now)
        self.registry.set_header(throttled_until=shown)

    def trim(self) -> None:
        """Above the (lowered) target: the longest-idle worker retires now,
        not at the next idle sweep."""
        pool = self.pool_view(self.registry.snapshot())
        if pool.total > policy.target_pool(pool.busy, self.server.children, self.idle_target):
            for pid in policy.longest_idle(pool, 1):
                self.retire(pid)

    def ready_count(self) -> int:
        return sum(1 for r in self.workers.values()
                   if r.ready and r.generation == self.generation)

    def new_generation(self, app: App) -> int:
        """Reload: later forks run `app`; every older worker retires (idle
        ones now, busy ones after their session).  -> how many retire."""
        self.app = app
        self.idle_target = self.server.idle_children
        self.generation += 1
        old = [rec.pid for rec in self.workers.values() if rec.generation < self.generation]
        for pid in old:
            self.retire(pid)
        return len(old)

    def read_gossip(self, data: bytes) -> bool:
        """The workers' gossip -> True when a pool plan should run now."""
        wanted = False
        for message in self.gossip.feed(data):
            rec = self.workers.get(message.pid)
            if rec is None:
                continue
            if message.kind is gossip.Kind.IDLE:
                self.throttle.record_healthy()  # a whole session worked
            else:  # READY, or BUSY (one spare fewer): it surely got this far
                rec.ready = wanted = True
        return wanted

    # ---- processes -----------------------------------------------------------
    def spawn(self) -> bool:
        try:
            slot = self.registry.claim_slot()
        except RegistryError as exc:
            log.warning("cannot start a worker: %s", exc)
            return False
        lifetime = policy.lifetime_with_jitter(self.server.child_lifetime, self.rng)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
        try:
            gc.freeze()  # what the supervisor built since the last fork stays shared too
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            self.registry.release_slot(slot)
            log.error("fork failed: %s", exc)
            return False
        if pid == 0:
            self._child(slot, lifetime, old_mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.workers[pid] = WorkerRec(pid, slot, self.generation, time.monotonic())
        log.debug("worker %d started (slot %d, generation %d, lifetime %d)",
                  pid, slot, self.generation, lifetime)
        return True

    def _child(self, slot: int, lifetime: int, old_mask: Iterable[int]) -> None:
        """In the new worker: never returns into the supervisor's code."""
        code = EX_SOFTWARE
        gc.enable()  # the supervisor runs without automatic collection (qsmtp.cli)
        try:
            for fd in (*self.private_fds, self.wake_r, self.lifeline_w):
                os.close(fd)
            worker = Worker(app=self.app, listeners=self.listeners,
                            registry=self.registry, slot=slot,
                            generation=self.generation, lifetime=lifetime,
                            lifeline=self.lifeline_r, wake=self.wake_w,
                            ppid=os.getppid(), base_nice=self.base_nice,
                            sigmask=old_mask)
            code = worker.run()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def retire(self, pid: int) -> None:
        rec = self.workers.get(pid)
        if rec is None or rec.retiring:
            return
        rec.retiring = True
        _kill(pid, signal.SIGHUP)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rec = self.workers.pop(pid, None)
            if rec is None:
                continue
            self.registry.release_slot(rec.slot)  # only now: waitpid is the truth
            self._note_exit(rec, status)

    def _note_exit(self, rec: WorkerRec, status: int) -> None:
        age = time.monotonic() - rec.started
        if os.WIFSIGNALED(status):
            how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            how = f"exit {os.WEXITSTATUS(status)}"
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if clean or rec.retiring or self.stopping:
            log.debug("worker %d gone (%s, %.1fs old)", rec.pid, how, age)
            return
        log.warning("worker %d died (%s) after %.1fs", rec.pid, how, age,
                    extra={"worker": rec.pid})
        # The back-off is for workers dying before they reach their accept
        # loop (broken plugin, missing file).  One killed in service (kill -9,
        # OOM killer), however young, is replaced at once.
        if not rec.ready:
            self.throttle.record_exit(age, time.monotonic())

    def check_heartbeats(self) -> None:
        """A worker silent for 2 x timeout is wedged (a hook in C, a stopped
        process): SIGKILL it; the reap frees its slot and the plan replaces it."""
        # A hook may legitimately run hook_timeout without touching.
        limit = max(self.server.timeout, self.server.hook_timeout) * 2
        now = time.monotonic()
        for slot in self.registry.snapshot()["workers"]:
            rec = self.workers.get(slot["pid"])
            if rec and slot["heartbeat"] and now - slot["heartbeat"] > limit:
                log.error("worker %d silent for %.0fs (> 2 x timeout): killing it",
                          rec.pid, now - slot["heartbeat"], extra={"worker": rec.pid})
                _kill(rec.pid, signal.SIGKILL)

    def stop(self) -> None:
        """TERM to every worker; from now on their exits are expected."""
        self.stopping = True
        self.kill_all(signal.SIGTERM)

    def kill_all(self, sig: int) -> None:
        for pid in list(self.workers):
            _kill(pid, sig)

    def reap_all(self) -> None:
        """Wait for each worker (after SIGKILL, when the supervisor fails)."""
        for pid in list(self.workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.workers.pop(pid, None)


def _kill(pid: int, sig: int) -> None:
    # ESRCH: already gone, the reap will tell.  Anything else (EPERM) is a bug.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
