"""What earlier runs of this instance left behind, removed before a start.

Only objects this instance can prove are its own are touched:
- the ones its published file names (a crashed run: key, shm_id, sem_id),
  refused if that run's supervisor is alive;
- a half-created segment under the key the published file holds alone (a
  start killed while zero-filling a large segment: no header yet);
- orphans: segments of ours nobody has attached whose header names this
  runtime dir (`instance`) and a dead supervisor: a crash whose published
  file was lost (runtime_dir wiped).
Another instance's registry (another runtime dir), even a stale one that
its qsmtpctl is about to report, is never ours to remove.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import sysv_ipc

from qsmtp import registry_published as pubfile
from qsmtp import sysvipc
from qsmtp.pidfile import alive as pid_alive
from qsmtp.registry_layout import (
    H_INSTANCE,
    HEADER_SIZE,
    INSTANCE_SIZE,
    MAGIC,
    SLOT_SIZE,
    header_pid,
)

log = logging.getLogger("qsmtp.registry")


class StillRunning(Exception):
    """The run the published file names is alive: no second start."""


def clear_leftovers(runtime_dir: str, instance: bytes) -> None:
    """Before creating this instance's registry.  StillRunning if it runs."""
    _remove_stale(runtime_dir)
    _remove_orphans(instance)


def is_qsmtp(pid: int) -> bool:
    """Guards against pid reuse: a live pid counts only if it is qsmtp."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"qsmtp" in handle.read()
    except OSError:
        return False


def _running(pid: int) -> bool:
    return pid_alive(pid) and is_qsmtp(pid)


def _remove_stale(runtime_dir: str) -> None:
    """Remove what a crashed run left, or refuse if that run is alive."""
    data = pubfile.read(runtime_dir)
    if data is None:
        return
    if "shm_id" not in data:  # only the key: a creation that was interrupted
        _remove_half_created(data.get("key"))
        pubfile.unlink(runtime_dir)
        return
    pid = int(data.get("pid", 0))
    head = _header(data)
    if head is not None and _running(pid) and header_pid(head) == pid:
        raise StillRunning(f"another qsmtp (pid {pid}) is running")
    if head is not None:
        log.warning("removing stale registry of pid %d (shm %s)", pid, data.get("shm_id"))
        with contextlib.suppress(sysv_ipc.Error):
            sysv_ipc.remove_shared_memory(int(data["shm_id"]))
        with contextlib.suppress(sysv_ipc.Error, KeyError):
            sem = sysv_ipc.Semaphore(int(data["key"]))
            if sem.id == data.get("sem_id"):
                sem.remove()
    pubfile.unlink(runtime_dir)


def _header(data: dict[str, Any]) -> bytes | None:
    """The header of the segment the published file names, if that segment
    is a registry under the published key (ids are reused); else None."""
    try:
        shm = sysv_ipc.attach(int(data["shm_id"]), flags=sysv_ipc.SHM_RDONLY)
    except (sysv_ipc.Error, KeyError, TypeError, ValueError):
        return None
    try:
        head = shm.read(HEADER_SIZE)
    finally:
        shm.detach()
    if head[:len(MAGIC)] != MAGIC or sysvipc.key("shm", shm.id) != data.get("key"):
        return None
    return head


def _remove_half_created(key: Any) -> None:
    """The segment a killed start left under the key it published first:
    maybe without a header (zero-filling a large segment takes a while).
    Ours if our uid created it; dead if nobody has it attached (a live
    registry always has its supervisor attached)."""
    if not isinstance(key, int) or isinstance(key, bool):
        return
    with contextlib.suppress(sysv_ipc.Error):
        shm = sysv_ipc.SharedMemory(key)
        shm.detach()
        row = sysvipc.row("shm", shm.id)
        if row is None or row["nattch"] != "0" or int(row["cuid"]) != os.geteuid():
            return
        log.warning("removing a half-created registry (shm %d, key %d) left by an "
                    "interrupted start", shm.id, key)
        sysv_ipc.remove_shared_memory(shm.id)
        sysv_ipc.Semaphore(key).remove()


def _remove_orphans(instance: bytes) -> None:
    """Segments of ours nobody is attached to, made for this runtime dir, whose
    supervisor is dead.  A live registry always has its supervisor attached,
    so nattch == 0 is required."""
    for row in sysvipc.table("shm"):
        size = int(row["size"]) - HEADER_SIZE
        if (row["nattch"] != "0" or int(row["uid"]) != os.geteuid()
                or size <= 0 or size % SLOT_SIZE):
            continue
        with contextlib.suppress(sysv_ipc.Error):
            shm = sysv_ipc.attach(int(row["shmid"]), flags=sysv_ipc.SHM_RDONLY)
            head = shm.read(HEADER_SIZE)
            shm.detach()
            pid = header_pid(head)
            if (head[:len(MAGIC)] != MAGIC
                    or head[H_INSTANCE:H_INSTANCE + INSTANCE_SIZE] != instance
                    or _running(pid)):
                continue
            log.warning("removing orphaned registry of pid %d (shm %s)", pid, row["shmid"])
            sysv_ipc.remove_shared_memory(int(row["shmid"]))
            sysv_ipc.Semaphore(int(row["key"])).remove()
