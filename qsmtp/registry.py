"""The worker registry: one SysV shared-memory segment of fixed-size slots,
guarded by one SysV semaphore.  The only user of sysv_ipc besides the
modules it delegates to, one job each:

- registry_layout.py: the bytes (offsets, encode, decode -> snapshot);
- registry_lock.py: the semaphore, SEM_UNDO, recovery of a wedged lock;
- registry_published.py: the JSON file in runtime_dir that names the segment;
- registry_cleanup.py: what crashed runs of this instance left;
- registry_admission.py: the per-IP count (server.max_from_ip);
- sysvipc.py: the kernel's /proc/sysvipc tables.

This module owns the segment's life cycle and every read and write of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from typing import Any

import sysv_ipc

from qsmtp import registry_admission as admission
from qsmtp import registry_lock as lock
from qsmtp import registry_published as pubfile
from qsmtp import sysvipc
from qsmtp.registry_cleanup import StillRunning, clear_leftovers
from qsmtp.registry_layout import (
    F64,
    FREE,
    H_GEN,
    H_LOCKREC,
    H_REASON,
    H_RELOAD,
    H_SESSIONS,
    H_STATE,
    HEADER,
    HEADER_FIELDS,
    HEADER_SIZE,
    IDLE,
    MAGIC,
    PACK_D,
    PACK_I,
    PACK_Q,
    PEER_SIZE,
    REASON_SIZE,
    RELOAD_STATUS,
    RESERVED,
    S_HEARTBEAT,
    S_MATCH,
    S_PID,
    S_SESSIONS,
    S_STATE,
    SERVICE_SIZE,
    SLOT,
    SLOT_SIZE,
    SUPERVISOR_STATES,
    U32,
    U64,
    VERSION,
    decode,
    encode_text,
    header_slots,
    instance_id,
)

log = logging.getLogger("qsmtp.registry")


class RegistryError(Exception):
    """The registry cannot be created or used."""


class NotRunning(RegistryError):
    def __init__(self, path: str):
        super().__init__(f"qsmtp is not running (no registry at {path})")
        self.path = path


class RegistryPermissionError(RegistryError):
    def __init__(self, path: str, group: str):
        super().__init__(f"cannot read the registry at {path}: permission denied "
                         f"(join group {group})")
        self.path, self.group = path, group


class Registry:
    """See the module docstring.  One object per process; it survives fork.
    `owner` (the supervisor) recovers a wedged lock; a worker clears it."""

    def __init__(self, shm: sysv_ipc.SharedMemory, sem: sysv_ipc.Semaphore | None,
                 runtime_dir: str, owner: bool, slots: int):
        self.shm, self.sem = shm, sem
        self.runtime_dir, self.owner, self.slots = runtime_dir, owner, slots
        self.path = pubfile.path(runtime_dir)
        self._offsets = [HEADER_SIZE + i * SLOT_SIZE for i in range(slots)]
        self._removed = False
        self._view: memoryview | None = None
        self._recovery = lock.Recovery(self.worker_pids, self._count_recovery)

    # ---- life cycle (supervisor) ------------------------------------------
    @classmethod
    def create(cls, runtime_dir: str, slots: int, supervisor_pid: int, *,
               mode: int = 0o640, owner_gid: int | None = None,
               owner_uid: int | None = None) -> Registry:
        if slots < 1:
            raise RegistryError("a registry needs at least one slot")
        os.makedirs(runtime_dir, mode=0o755, exist_ok=True)
        try:
            clear_leftovers(runtime_dir, instance_id(os.path.realpath(runtime_dir)))
        except StillRunning as exc:
            raise RegistryError(str(exc)) from None
        shm, sem = cls._new_objects(HEADER_SIZE + slots * SLOT_SIZE, mode, runtime_dir)
        try:
            for obj in (shm, sem):
                if owner_uid is not None:
                    obj.uid = owner_uid
                if owner_gid is not None:
                    obj.gid = owner_gid
            reg = cls(shm, sem, runtime_dir, owner=True, slots=slots)
            reg._write_header(supervisor_pid, slots)
            pubfile.write(runtime_dir, {"key": shm.key, "shm_id": shm.id, "sem_id": sem.id,
                                          "pid": supervisor_pid, "version": VERSION,
                                          "slots": slots})
        except BaseException:
            shm.detach()
            shm.remove()
            sem.remove()
            raise
        return reg

    @staticmethod
    def _new_objects(size: int, mode: int, runtime_dir: str
                     ) -> tuple[sysv_ipc.SharedMemory, sysv_ipc.Semaphore]:
        """A fresh random key for both objects (IPC_CREX, retried on clashes),
        published before the objects exist: a start killed half-way leaves
        the key behind, and the next start removes what it finds under it."""
        for _ in range(64):
            # Our own key from the OS, not sysv_ipc's rand(): a forked process
            # shares that generator's state and would draw the same keys.
            # (Not the secrets module: it loads OpenSSL's libcrypto.)
            key = int.from_bytes(os.urandom(4), "big") % 0x7FFFFFFE + 1
            pubfile.write(runtime_dir, {"key": key, "pid": os.getpid(), "version": VERSION})
            try:
                shm = sysv_ipc.SharedMemory(key, sysv_ipc.IPC_CREX, mode=mode, size=size,
                                            init_character=b"\0")
            except sysv_ipc.ExistentialError:
                continue
            try:
                sem = sysv_ipc.Semaphore(shm.key, sysv_ipc.IPC_CREX, mode=mode,
                                         initial_value=1)
            except sysv_ipc.ExistentialError:
                shm.detach()
                shm.remove()
                continue
            sem.undo = True
            return shm, sem
        raise RegistryError("no free SysV IPC key found")

    def _write_header(self, pid: int, slots: int) -> None:
        instance = instance_id(os.path.realpath(self.runtime_dir))
        head = HEADER.pack(MAGIC, VERSION, SLOT_SIZE, slots, pid, 0, 0, 0, 0,
                           time.time(), 0, slots, 0, 0, 0, 0.0, 0.0, b"", instance)
        self.shm.write(head, 0)

    def remove(self) -> None:
        """Clean stop: nothing is left behind (ipcs shows nothing)."""
        if self._removed:
            return
        self._removed = True
        with contextlib.suppress(PermissionError):
            if pubfile.names(self.runtime_dir, self.shm.id):
                pubfile.unlink(self.runtime_dir)
        with contextlib.suppress(sysv_ipc.Error):
            self.shm.remove()
        if self.sem is not None:
            with contextlib.suppress(sysv_ipc.Error):
                self.sem.remove()
        self.detach()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def detach(self) -> None:
        if self._view is not None:  # never a live buffer over unmapped memory
            self._view.release()
            self._view = None
        with contextlib.suppress(sysv_ipc.Error):
            if self.shm.attached:
                self.shm.detach()

    # ---- readers -------------------------------------------------------------
    @classmethod
    def attach(cls, runtime_dir: str, *, writable: bool = False) -> Registry:
        path = pubfile.path(runtime_dir)
        try:
            data = pubfile.read(runtime_dir)
        except PermissionError:
            group = pubfile.group_name(pubfile.dir_gid(runtime_dir))
            raise RegistryPermissionError(path, group) from None
        if data is None:
            raise NotRunning(path)
        try:
            shm_id = int(data["shm_id"])
            flags = 0 if writable else sysv_ipc.SHM_RDONLY
            shm = sysv_ipc.attach(shm_id, flags=flags)
        except sysv_ipc.PermissionsError:
            group = pubfile.group_name(sysvipc.gid("shm", shm_id))
            raise RegistryPermissionError(path, group) from None
        except (sysv_ipc.Error, KeyError, TypeError, ValueError):
            raise NotRunning(path) from None
        head = shm.read(HEADER_SIZE)
        if head[:len(MAGIC)] != MAGIC:
            shm.detach()
            raise NotRunning(path)
        sem = None
        with contextlib.suppress(sysv_ipc.Error):
            sem = sysv_ipc.Semaphore(int(data["key"]))
            sem.undo = True
        return cls(shm, sem, runtime_dir, owner=False, slots=header_slots(head))

    def exists(self) -> bool:
        """False once the supervisor removed the segment (or it was replaced)."""
        try:
            named = pubfile.names(self.runtime_dir, self.shm.id)
        except PermissionError:
            return True
        return named and sysvipc.gid("shm", self.shm.id) is not None

    # ---- the lock ------------------------------------------------------------
    def _locked(self, timeout: float | None = None) -> contextlib.AbstractContextManager[bool]:
        """True when locked; False if it proceeds without the lock."""
        return lock.held(self.sem, timeout, self._recovery if self.owner else None)

    def check_lock(self) -> None:
        """Supervisor tick: see registry_lock.clamp."""
        lock.clamp(self.sem)

    def _count_recovery(self) -> None:
        count = U32.unpack(self.shm.read(U32.size, H_LOCKREC))[0]
        self.shm.write(PACK_I(count + 1), H_LOCKREC)

    # ---- supervisor side -------------------------------------------------------
    def claim_slot(self) -> int:
        """A free slot, marked reserved (before fork). RegistryError if full."""
        with self._locked():
            for index, offset in enumerate(self._offsets):
                if self.shm.read(1, offset + S_STATE)[0] == FREE:
                    self.shm.write(SLOT.pack(0, 0, 0, 0, RESERVED, 0, b"", b"",
                                             0.0, 0.0, time.time()), offset)
                    return index
        raise RegistryError("no free registry slot")

    def set_slot(self, index: int, pid: int, generation: int) -> None:
        """The forked worker's pid in its reserved slot, idle."""
        now = time.time()
        self.shm.write(SLOT.pack(pid, generation, 0, 0, IDLE, 0, b"", b"", now,
                                 time.monotonic(), now),
                       self._offsets[index])

    def release_slot(self, index: int) -> None:
        """Only after waitpid: the pid is gone for good.  Its sessions move
        into the header's count (see mark_idle)."""
        offset = self._offsets[index]
        with self._locked():
            served = U32.unpack(self.shm.read(U32.size, offset + S_SESSIONS))[0]
            total = U64.unpack(self.shm.read(U64.size, H_SESSIONS))[0]
            self.shm.write(PACK_Q(total + served), H_SESSIONS)
            self.shm.write(bytes(SLOT_SIZE), offset)

    def set_generation(self, generation: int) -> None:
        self.shm.write(PACK_I(generation), H_GEN)

    def set_state(self, state: str) -> None:
        self.shm.write(bytes([SUPERVISOR_STATES.index(state)]), H_STATE)

    def set_reload(self, status: str, reason: str = "", now: float | None = None,
                   whole: str | None = None) -> None:
        """reload_status for qsmtpctl reload: 'ok' or 'failed' with a reason.
        The header keeps REASON_SIZE bytes of it; the published file the whole
        reason (`whole`, e.g. with the file name in front)."""
        now = time.time() if now is None else now
        self.publish(reload={"status": status, "reason": whole or reason, "time": now})
        self.set_header(reload_time=now)
        self.shm.write(encode_text(reason, REASON_SIZE), H_REASON)
        self.shm.write(bytes([RELOAD_STATUS.index(status)]), H_RELOAD)

    def publish(self, **info: Any) -> None:
        """Owner: add to the published file what the fixed-size header cannot
        hold (the whole reload reason, the config file, why it is invalid)."""
        try:
            data = pubfile.read(self.runtime_dir)
            if not data or data.get("shm_id") != self.shm.id:
                return
            data.update(info)
            pubfile.write(self.runtime_dir, data)
        except OSError as exc:  # status detail only: never worth failing over
            log.warning("cannot update %s: %s", self.path, exc)

    def published(self) -> dict[str, Any]:
        """Reader: the published file of this registry ({} if replaced)."""
        try:
            data = pubfile.read(self.runtime_dir)
        except OSError:
            return {}
        return data if data and data.get("shm_id") == self.shm.id else {}

    def set_header(self, **fields: Any) -> None:
        for name, value in fields.items():
            if name == "state":
                self.set_state(value)
                continue
            offset, fmt = HEADER_FIELDS[name]
            self.shm.write(struct.pack(fmt, value), offset)

    def worker_pids(self) -> list[int]:
        raw = self.shm.read(self.slots * SLOT_SIZE, HEADER_SIZE)
        return [pid for (pid,) in (U32.unpack_from(raw, i * SLOT_SIZE + S_PID)
                                   for i in range(self.slots)) if pid]

    # ---- worker side -------------------------------------------------------------
    def _mem(self) -> memoryview:
        """The segment as a buffer (per-session writes): no syscall, where
        sysv_ipc's read()/write() each make a shmctl(IPC_STAT) for the size."""
        if self._view is None:
            self._view = memoryview(self.shm)
        return self._view

    def mark_busy(self, index: int, peer_ip: str | None, service: str,
                  max_from_ip: int) -> int | None:
        """Atomically: refuse (return the count of this IP's other sessions)
        when it has max_from_ip already, else mark the slot busy -> None."""
        record = admission.busy_record(peer_ip)
        busy = record + encode_text(service, SERVICE_SIZE) + PACK_D(time.time())
        mem, at = self._mem(), self._offsets[index] + S_MATCH
        # The lock makes count + mark one step; with no count (max_from_ip
        # 0) the mark is an own-slot write, safe unlocked as in mark_idle.
        with self._locked() if max_from_ip > 0 else contextlib.nullcontext():
            if max_from_ip > 0:
                area = bytes(mem[HEADER_SIZE:HEADER_SIZE + self.slots * SLOT_SIZE])
                count = admission.refused(area, index, record, max_from_ip)
                if count is not None:
                    return count
            mem[at:at + len(busy)] = busy
        return None

    def mark_idle(self, index: int, sessions_served: int) -> None:
        """End of a session: slot idle, its served count updated; no lock.
        Only this worker writes its slot, in one copy.  A reader meeting it
        half done is fine: a per-IP count sees this ending session busy or
        not (never more than the truth a moment ago); status may show the
        slot mid-change once.  No shared counter: see decode's sessions_total."""
        offset = self._offsets[index] + S_SESSIONS
        idle = (PACK_I(sessions_served) + bytes(S_STATE - S_SESSIONS - U32.size)
                + bytes([IDLE, 0]) + bytes(PEER_SIZE + SERVICE_SIZE) + PACK_D(time.time()))
        self._mem()[offset:offset + len(idle)] = idle

    def spares(self) -> tuple[int, int]:
        """(idle + starting workers, the supervisor's idle target), read
        unlocked: a hint for a worker going busy (Worker._spares_short)."""
        mem = self._mem()
        states = bytes(mem[HEADER_SIZE + S_STATE:HEADER_SIZE + self.slots * SLOT_SIZE:SLOT_SIZE])
        offset, fmt = HEADER_FIELDS["idle_children"]
        return states.count(IDLE) + states.count(RESERVED), struct.unpack_from(fmt, mem, offset)[0]

    def heartbeat(self, index: int, now: float | None = None) -> None:
        """Own field only, no lock: one 8-byte aligned write.  CLOCK_MONOTONIC
        (system-wide on Linux): the supervisor's silence check must not see a
        wall-clock step as every worker going quiet."""
        at = self._offsets[index] + S_HEARTBEAT
        self._mem()[at:at + F64.size] = PACK_D(time.monotonic() if now is None else now)

    # ---- snapshot ---------------------------------------------------------------------
    def snapshot(self, timeout: float | None = None) -> dict[str, Any]:
        """Header + non-free slots, read in one copy under the lock.  Without
        the lock (no permission, or timeout) two identical reads in a row count
        as consistent."""
        size = HEADER_SIZE + self.slots * SLOT_SIZE
        with self._locked(timeout) as locked:
            raw = self.shm.read(size)
        consistent = locked
        if not locked:
            for _ in range(5):
                again = self.shm.read(size)
                if again == raw:
                    consistent = True
                    break
                raw = again
        snap = decode(raw, consistent)
        snap["monotonic"] = time.monotonic()  # heartbeat ages are against this clock
        return snap

