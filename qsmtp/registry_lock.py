"""The registry's lock: one SysV semaphore taken with SEM_UNDO, and what
happens when it is not free within LOCK_TIMEOUT.

Why SEM_UNDO: a worker killed while holding the lock gets it released by the
kernel, so a crash can never wedge the fleet.  A *live* holder stuck for more
than LOCK_TIMEOUT (SIGSTOPped, swapped out) is recovered here: workers and
readers log and proceed unlocked (an approximate per-IP count beats a hang);
the supervisor SIGKILLs the holder if it is one of its workers (the kernel's
undo then frees the lock) and otherwise force-resets the value to 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator

import sysv_ipc

from qsmtp.pidfile import alive as pid_alive

log = logging.getLogger("qsmtp.registry")

LOCK_TIMEOUT = 2.0  # seconds; a bound, never a hang


class Recovery:
    """What the supervisor's recovery needs from the registry: its worker
    pids (only those may be killed) and a way to count each recovery."""

    def __init__(self, worker_pids: Callable[[], list[int]],
                 counted: Callable[[], None]) -> None:
        self.worker_pids, self.counted = worker_pids, counted


@contextlib.contextmanager
def held(sem: sysv_ipc.Semaphore | None, timeout: float | None,
         recovery: Recovery | None) -> Iterator[bool]:
    """Yields True when locked; False if it proceeds without the lock.
    `recovery` is the supervisor's (None: only log when the lock is wedged)."""
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    if sem is None:
        yield False
        return
    try:
        sem.acquire(timeout)
    except sysv_ipc.BusyError:
        if not _recover(sem, timeout, recovery):
            yield False
            return
    except sysv_ipc.Error as exc:  # e.g. no alter permission for a reader
        log.debug("registry lock unavailable: %s", exc)
        yield False
        return
    try:
        yield True
    finally:
        sem.release()


def _recover(sem: sysv_ipc.Semaphore, timeout: float, recovery: Recovery | None) -> bool:
    """The lock was not free within the bound.  Log, then recover: only the
    supervisor acts; it kills a wedged worker holder (SEM_UNDO frees the
    lock) or force-resets the value.  Returns True if we now hold it."""
    holder = sem.last_pid
    log.error("registry lock not acquired within %.1fs (held by pid %d)%s",
              timeout, holder, "; recovering" if recovery else "; going on unlocked")
    if recovery is None:
        return False
    if holder != os.getpid() and holder in recovery.worker_pids() and pid_alive(holder):
        with contextlib.suppress(OSError):
            os.kill(holder, signal.SIGKILL)
        with contextlib.suppress(sysv_ipc.BusyError):
            sem.acquire(timeout)
            recovery.counted()
            return True
    sem.value = 0  # we take it: setting 0 then releasing gives exactly 1
    recovery.counted()
    return True


def clamp(sem: sysv_ipc.Semaphore | None) -> None:
    """After a forced reset, the old holder's late release would leave the
    value at 2 (no mutual exclusion); clamp it back to 1."""
    if sem is not None and sem.value > 1:
        log.error("registry lock value %d > 1 after a recovery; clamping to 1", sem.value)
        sem.value = 1
