"""The registry's lock (registry_lock.py): SEM_UNDO, a wedged holder
(workers go on unlocked, the supervisor kills or resets), the late-release
clamp, snapshots without the lock, and what the lock costs."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from helpers.registry import worker as _worker
from qsmtp import registry_lock
from qsmtp.registry import Registry


def test_lock_released_by_kernel_when_holder_dies(reg):
    """SEM_UNDO: a worker killed while holding the lock cannot wedge the fleet."""
    pid = os.fork()
    if pid == 0:
        reg.sem.acquire()
        os._exit(0)  # dies holding it
    os.waitpid(pid, 0)
    assert reg.sem.value == 1
    assert reg.mark_busy(_worker(reg, 5), "1.2.3.4", "smtp", 1) is None


def _hold_lock_in_child(reg: Registry) -> int:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        reg.sem.acquire()
        os.write(write, b"x")
        time.sleep(60)
        os._exit(0)
    os.read(read, 1)
    os.close(read)
    os.close(write)
    return pid


def test_worker_goes_on_unlocked_when_lock_is_wedged(reg, monkeypatch, caplog):
    index = _worker(reg, 5)
    holder = _hold_lock_in_child(reg)  # not a registered worker
    try:
        worker = Registry(reg.shm, reg.sem, reg.runtime_dir, owner=False, slots=reg.slots)
        monkeypatch.setattr(registry_lock, "LOCK_TIMEOUT", 0.2)
        started = time.monotonic()
        with worker._locked(0.2) as locked:
            assert locked is False
        assert time.monotonic() - started < 2
        assert "not acquired" in caplog.text and str(holder) in caplog.text
        started = time.monotonic()
        assert worker.mark_busy(index, "1.2.3.4", "smtp", 1) is None
        assert time.monotonic() - started < 2
    finally:
        os.kill(holder, 9)
        os.waitpid(holder, 0)
    assert reg.sem.value == 1


def test_supervisor_kills_wedged_worker_holding_lock(reg, caplog):
    index = reg.claim_slot()
    holder = _hold_lock_in_child(reg)
    reg.set_slot(index, holder, 1)  # the holder is one of our workers
    try:
        with reg._locked(0.2) as locked:
            assert locked is True
        assert reg.snapshot()["supervisor"]["lock_recoveries"] == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder, 9)
        os.waitpid(holder, 0)
    assert reg.sem.value == 1


def test_supervisor_resets_lock_held_by_stranger(reg):
    reg.sem.undo = False
    reg.sem.acquire()  # a holder that is not a worker and never releases
    reg.sem.undo = True
    assert reg.sem.value == 0
    with reg._locked(0.1) as locked:
        assert locked
    assert reg.sem.value == 1
    assert reg.snapshot()["supervisor"]["lock_recoveries"] == 1


def test_check_lock_clamps_after_late_release(reg):
    reg.sem.release()  # a holder we force-reset releases late: value 2
    assert reg.sem.value == 2
    reg.check_lock()
    assert reg.sem.value == 1


def test_snapshot_without_lock_is_marked(reg):
    reg.sem.undo = False
    reg.sem.acquire()
    reg.sem.undo = True
    try:
        reader = Registry.attach(reg.runtime_dir)
        snap = reader.snapshot(timeout=0.1)
        # could not lock, but two identical reads prove the copy is whole
        assert snap["consistent"] is True
        reader.detach()
    finally:
        reg.sem.release()


@pytest.mark.parametrize("slots", [15, 256])
def test_lock_cost(runtime_dir, sysv_guard, capsys, slots):
    """Not a timing assertion: prints the cost so regressions are visible."""
    reg = Registry.create(runtime_dir, slots, os.getpid())
    sysv_guard.track(runtime_dir)
    for n in range(slots - 1):  # a full registry: the per-IP scan sees every slot
        reg.mark_busy(_worker(reg, 10 + n), f"10.0.{n // 250}.{n % 250}", "smtp", 0)
    index = _worker(reg, 1)
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        reg.mark_busy(index, "192.0.2.1", "smtp", 10)
        reg.mark_idle(index, 1)
    pair = (time.perf_counter() - started) / rounds * 1e6
    started = time.perf_counter()
    for _ in range(rounds):
        reg.heartbeat(index)
    beat = (time.perf_counter() - started) / rounds * 1e6
    with capsys.disabled():
        print(f"\n  registry: mark_busy+mark_idle {pair:.1f} us, heartbeat {beat:.2f} us "
              f"({reg.slots} slots)")
    reg.remove()
    assert pair < 50_000


