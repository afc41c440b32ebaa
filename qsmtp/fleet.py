"""The supervisor's side of the worker processes: fork, reap, retire, and
one pool plan per tick (the decisions themselves are qsmtp.policy's).

A mixin of Supervisor; split out only to keep each file readable.  Worker
reports (registry states, wake-pipe gossip) are hints; waitpid is the
truth: a slot is released only after its pid was reaped.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from types import SimpleNamespace

from qsmtp import policy
from qsmtp.exitcodes import EX_SOFTWARE
from qsmtp.registry import RegistryError
from qsmtp.worker import Worker

log = logging.getLogger("qsmtp.supervisor")

SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGCHLD, signal.SIGUSR2)


@dataclass
class WorkerRec:
    pid: int
    slot: int
    generation: int
    started: float       # time.time() at fork
    ready: bool = False  # gossip: it reached its accept loop
    retiring: bool = False


class FleetMixin:
    def _pool_view(self, snap: dict) -> policy.PoolView:
        slots = {w["slot"]: w for w in snap["workers"]}
        views = []
        for rec in self.workers.values():
            if rec.retiring or rec.generation != self.generation:
                continue
            slot = slots.get(rec.slot)
            if slot is None or slot["pid"] != rec.pid:
                state, since = "starting", rec.started
            else:
                state, since = slot["state"], slot["since"]
            views.append(policy.WorkerView(rec.pid, state, since, rec.started))
        return policy.PoolView.of(views)

    def _manage(self) -> None:
        snap = self.registry.snapshot()
        pool = self._pool_view(snap)
        settings = SimpleNamespace(children=self.server.children,
                                   idle_children=self.idle_target)
        now = time.time()
        plan = policy.plan(pool, settings, now, surplus_since=self.surplus_since,
                           throttle=self.throttle)
        self.surplus_since = plan.surplus_since
        for _ in range(plan.spawn):
            if not self.spawn():
                break
        for pid in plan.retire:
            self._retire(pid)
        if plan.spawn or plan.retire:
            snap = self.registry.snapshot()
            pool = self._pool_view(snap)
        extra = self.throttle.status_text(now)
        total = pool.total + sum(1 for r in self.workers.values() if r.retiring)
        self.status_line = policy.status_line(
            total, pool.busy, pool.idle, self.server.children,
            snap["supervisor"]["sessions_total"], extra)
        self._maybe_ready()

    def spawn(self) -> bool:
        try:
            slot = self.registry.claim_slot()
        except RegistryError as exc:
            log.warning("cannot start a worker: %s", exc)
            return False
        lifetime = policy.lifetime_with_jitter(self.server.child_lifetime, self.rng)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            self.registry.release_slot(slot)
            log.error("fork failed: %s", exc)
            return False
        if pid == 0:
            self._child(slot, lifetime, old_mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.workers[pid] = WorkerRec(pid, slot, self.generation, time.time())
        log.debug("worker %d started (slot %d, generation %d, lifetime %d)",
                  pid, slot, self.generation, lifetime)
        return True

    def _child(self, slot: int, lifetime: int, old_mask) -> None:
        """In the new worker: never returns into the supervisor's code."""
        code = EX_SOFTWARE
        try:
            for fd in (self.pipe_r, self.pipe_w, self.wake_r, self.lifeline_w):
                os.close(fd)
            worker = Worker(app=self.app, listeners=self.listeners,
                            registry=self.registry, slot=slot,
                            generation=self.generation, lifetime=lifetime,
                            lifeline=self.lifeline_r, wake=self.wake_w,
                            ppid=os.getppid(), base_nice=self.base_nice)
            worker._signals()  # before unblocking: no supervisor handler in here
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            code = worker.run()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def _retire(self, pid: int) -> None:
        rec = self.workers.get(pid)
        if rec is None or rec.retiring:
            return
        rec.retiring = True
        _kill(pid, signal.SIGHUP)

    def _reap(self) -> None:
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
        age = time.time() - rec.started
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
            self.throttle.record_exit(age, time.time())

    def _check_heartbeats(self) -> None:
        """A worker silent for 2 x timeout is wedged (a hook in C, a stopped
        process): SIGKILL it; the reap frees its slot and the plan replaces it."""
        # A hook may legitimately run hook_timeout without touching.
        limit = max(self.server.timeout, self.server.hook_timeout) * 2
        now = time.time()
        for slot in self.registry.snapshot()["workers"]:
            rec = self.workers.get(slot["pid"])
            if rec and slot["heartbeat"] and now - slot["heartbeat"] > limit:
                log.error("worker %d silent for %.0fs (> 2 x timeout): killing it",
                          rec.pid, now - slot["heartbeat"], extra={"worker": rec.pid})
                _kill(rec.pid, signal.SIGKILL)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone: the reap will tell
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise
