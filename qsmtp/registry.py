"""The worker registry: one SysV shared-memory segment of fixed-size slots,
guarded by one SysV semaphore taken with SEM_UNDO.  The only user of sysv_ipc.

The byte layout is in registry_layout.py.

Why SEM_UNDO: a worker killed while holding the lock gets it released by the
kernel, so a crash can never wedge the fleet.  A *live* holder stuck for more
than LOCK_TIMEOUT (SIGSTOPped, swapped out) is handled by `_locked`: workers
log and proceed unlocked (an approximate per-IP count beats a hang); the
supervisor SIGKILLs the holder if it is one of its workers (the kernel's undo
then frees the lock) and otherwise force-resets the value to 1.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import secrets
import signal
import struct
import time
from typing import Any, Iterator

import sysv_ipc

from qsmtp.pidfile import alive as pid_alive
from qsmtp.registry_layout import (
    BUSY, FREE, H_GEN, H_LOCKREC, H_PID, H_RELOAD, H_SESSIONS, H_STATE, HEADER,
    HEADER_FIELDS, HEADER_SIZE, IDLE, MAGIC, PACK_D, PACK_I, RELOAD_STATUS, RESERVED,
    S_HEARTBEAT, S_MATCH, S_SESSIONS, SLOT, SLOT_SIZE, SUPERVISOR_STATES, VERSION,
    decode, encode_text, normalise_peer)

log = logging.getLogger("qsmtp.registry")

LOCK_TIMEOUT = 2.0  # seconds; a bound, never a hang
PUBLISHED = "registry"  # file name under runtime_dir


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


def _is_qsmtp(pid: int) -> bool:
    """Guards against pid reuse: a live pid counts only if it is qsmtp."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"qsmtp" in handle.read()
    except OSError:
        return False


def _ipc_row(kind: str, ipc_id: int) -> dict[str, str] | None:
    """One row of /proc/sysvipc/{shm,sem} (world-readable): key, uid, gid..."""
    try:
        with open(f"/proc/sysvipc/{kind}") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    names = lines[0].split()
    for line in lines[1:]:
        fields = dict(zip(names, line.split()))
        if fields.get("shmid" if kind == "shm" else "semid") == str(ipc_id):
            return fields
    return None


def _ipc_gid(kind: str, ipc_id: int) -> int | None:
    row = _ipc_row(kind, ipc_id)
    return int(row["gid"]) if row else None


def _ipc_key(kind: str, ipc_id: int) -> int | None:
    # sysv_ipc.attach(id) reports key 0, so the key comes from /proc.
    row = _ipc_row(kind, ipc_id)
    return int(row["key"]) if row else None


def _group_name(gid: int | None) -> str:
    if gid is None:
        return "?"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def read_published(runtime_dir: str) -> dict[str, Any] | None:
    path = os.path.join(runtime_dir, PUBLISHED)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise
    except (OSError, ValueError):
        return None  # torn or garbage: treat as absent (it is stale)
    return data if isinstance(data, dict) else None


def _publish(runtime_dir: str, data: dict[str, Any]) -> None:
    """Atomic: readers see the old file or the new one, never half."""
    path = os.path.join(runtime_dir, PUBLISHED)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _remove_stale(runtime_dir: str) -> None:
    """Remove what a crashed run left, or refuse if that run is alive."""
    data = read_published(runtime_dir)
    if data is None:
        return
    if "shm_id" not in data:  # only the key: a creation that was interrupted
        _remove_half_created(data.get("key"))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(runtime_dir, PUBLISHED))
        return
    pid = int(data.get("pid", 0))
    shm = None
    with contextlib.suppress(sysv_ipc.Error, KeyError, TypeError, ValueError):
        shm = sysv_ipc.attach(int(data["shm_id"]), flags=sysv_ipc.SHM_RDONLY)
    ours = (shm is not None and shm.read(8) == MAGIC
            and _ipc_key("shm", shm.id) == data.get("key"))
    if ours and pid_alive(pid) and _is_qsmtp(pid):
        header_pid = struct.unpack_from("<I", shm.read(HEADER_SIZE), H_PID)[0]
        shm.detach()
        if header_pid == pid:
            raise RegistryError(f"another qsmtp (pid {pid}) is running")
        ours = True
    if shm is not None:
        shm.detach()
    if ours:
        log.warning("removing stale registry of pid %d (shm %s)", pid, data.get("shm_id"))
        with contextlib.suppress(sysv_ipc.Error):
            sysv_ipc.remove_shared_memory(int(data["shm_id"]))
        with contextlib.suppress(sysv_ipc.Error, KeyError):
            sem = sysv_ipc.Semaphore(int(data["key"]))
            if sem.id == data.get("sem_id"):
                sem.remove()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(runtime_dir, PUBLISHED))


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
        row = _ipc_row("shm", shm.id)
        if row is None or row["nattch"] != "0" or int(row["cuid"]) != os.geteuid():
            return
        log.warning("removing a half-created registry (shm %d, key %d) left by an "
                    "interrupted start", shm.id, key)
        sysv_ipc.remove_shared_memory(shm.id)
        sysv_ipc.Semaphore(key).remove()


def _remove_orphans() -> None:
    """Segments of ours nobody is attached to and whose supervisor is dead:
    left by a crash whose published file was lost (runtime_dir wiped).  A live
    registry always has its supervisor attached, so nattch == 0 is required."""
    try:
        with open("/proc/sysvipc/shm") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return
    names = lines[0].split()
    for row in (dict(zip(names, line.split())) for line in lines[1:]):
        size = int(row["size"]) - HEADER_SIZE
        if (row["nattch"] != "0" or int(row["uid"]) != os.geteuid()
                or size <= 0 or size % SLOT_SIZE):
            continue
        with contextlib.suppress(sysv_ipc.Error):
            shm = sysv_ipc.attach(int(row["shmid"]), flags=sysv_ipc.SHM_RDONLY)
            head = shm.read(HEADER_SIZE)
            shm.detach()
            pid = struct.unpack_from("<I", head, H_PID)[0]
            if head[:8] != MAGIC or (pid_alive(pid) and _is_qsmtp(pid)):
                continue
            log.warning("removing orphaned registry of pid %d (shm %s)", pid, row["shmid"])
            sysv_ipc.remove_shared_memory(int(row["shmid"]))
            sysv_ipc.Semaphore(int(row["key"])).remove()


class Registry:
    """See the module docstring.  One object per process; it survives fork."""

    def __init__(self, shm: sysv_ipc.SharedMemory, sem: sysv_ipc.Semaphore | None,
                 runtime_dir: str, owner: bool, slots: int):
        self.shm, self.sem = shm, sem
        self.runtime_dir, self.owner, self.slots = runtime_dir, owner, slots
        self.path = os.path.join(runtime_dir, PUBLISHED)
        self._offsets = [HEADER_SIZE + i * SLOT_SIZE for i in range(slots)]
        self._removed = False

    # ---- life cycle (supervisor) ------------------------------------------
    @classmethod
    def create(cls, runtime_dir: str, slots: int, supervisor_pid: int, *,
               mode: int = 0o640, owner_gid: int | None = None,
               owner_uid: int | None = None) -> "Registry":
        if slots < 1:
            raise RegistryError("a registry needs at least one slot")
        os.makedirs(runtime_dir, mode=0o755, exist_ok=True)
        _remove_stale(runtime_dir)
        _remove_orphans()
        shm, sem = cls._new_objects(HEADER_SIZE + slots * SLOT_SIZE, mode, runtime_dir)
        try:
            for obj in (shm, sem):
                if owner_uid is not None:
                    obj.uid = owner_uid
                if owner_gid is not None:
                    obj.gid = owner_gid
            reg = cls(shm, sem, runtime_dir, owner=True, slots=slots)
            reg._write_header(supervisor_pid, slots)
            _publish(runtime_dir, {"key": shm.key, "shm_id": shm.id, "sem_id": sem.id,
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
            key = secrets.randbelow(0x7FFFFFFE) + 1
            _publish(runtime_dir, {"key": key, "pid": os.getpid(), "version": VERSION})
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
        head = HEADER.pack(MAGIC, VERSION, SLOT_SIZE, slots, pid, 0, 0, 0, 0,
                           time.time(), 0, slots, 0, 0, 0, 0.0, 0.0, b"")
        self.shm.write(head, 0)

    def remove(self) -> None:
        """Clean stop: nothing is left behind (ipcs shows nothing)."""
        if self._removed:
            return
        self._removed = True
        with contextlib.suppress(FileNotFoundError, PermissionError):
            data = read_published(self.runtime_dir)
            if data and data.get("shm_id") == self.shm.id:
                os.unlink(self.path)
        with contextlib.suppress(sysv_ipc.Error):
            self.shm.remove()
        if self.sem is not None:
            with contextlib.suppress(sysv_ipc.Error):
                self.sem.remove()
        self.detach()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def detach(self) -> None:
        with contextlib.suppress(sysv_ipc.Error):
            if self.shm.attached:
                self.shm.detach()

    # ---- readers -------------------------------------------------------------
    @classmethod
    def attach(cls, runtime_dir: str, *, writable: bool = False) -> "Registry":
        path = os.path.join(runtime_dir, PUBLISHED)
        try:
            data = read_published(runtime_dir)
        except PermissionError:
            raise RegistryPermissionError(path, _group_name(_dir_gid(runtime_dir))) from None
        if data is None:
            raise NotRunning(path)
        try:
            shm_id = int(data["shm_id"])
            flags = 0 if writable else sysv_ipc.SHM_RDONLY
            shm = sysv_ipc.attach(shm_id, flags=flags)
        except sysv_ipc.PermissionsError:
            raise RegistryPermissionError(path, _group_name(_ipc_gid("shm", shm_id))) from None
        except (sysv_ipc.Error, KeyError, TypeError, ValueError):
            raise NotRunning(path) from None
        if shm.read(8) != MAGIC:
            shm.detach()
            raise NotRunning(path)
        slots = struct.unpack_from("<I", shm.read(20), 16)[0]
        sem = None
        with contextlib.suppress(sysv_ipc.Error):
            sem = sysv_ipc.Semaphore(int(data["key"]))
            sem.undo = True
        return cls(shm, sem, runtime_dir, owner=False, slots=slots)

    def exists(self) -> bool:
        """False once the supervisor removed the segment (or it was replaced)."""
        try:
            data = read_published(self.runtime_dir)
        except PermissionError:
            return True
        return bool(data) and data.get("shm_id") == self.shm.id and _ipc_gid(
            "shm", self.shm.id) is not None

    # ---- the lock ------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, timeout: float | None = None) -> Iterator[bool]:
        """Yields True when locked; False if it proceeded without the lock."""
        timeout = LOCK_TIMEOUT if timeout is None else timeout
        if self.sem is None:
            yield False
            return
        try:
            self.sem.acquire(timeout)
        except sysv_ipc.BusyError:
            if not self._recover_lock(timeout):
                yield False
                return
        except sysv_ipc.Error as exc:  # e.g. no alter permission for a reader
            log.debug("registry lock unavailable: %s", exc)
            yield False
            return
        try:
            yield True
        finally:
            self.sem.release()

    def _recover_lock(self, timeout: float) -> bool:
        """The lock was not free within the bound.  Log, then recover: only the
        supervisor acts; it kills a wedged worker holder (SEM_UNDO frees the
        lock) or force-resets the value.  Returns True if we now hold it."""
        holder = self.sem.last_pid
        log.error("registry lock not acquired within %.1fs (held by pid %d)%s",
                  timeout, holder, "; recovering" if self.owner else "; going on unlocked")
        if not self.owner:
            return False
        if holder != os.getpid() and holder in self.worker_pids() and pid_alive(holder):
            with contextlib.suppress(OSError):
                os.kill(holder, signal.SIGKILL)
            with contextlib.suppress(sysv_ipc.BusyError):
                self.sem.acquire(timeout)
                self._count_recovery()
                return True
        self.sem.value = 0  # we take it: setting 0 then releasing gives exactly 1
        self._count_recovery()
        return True

    def check_lock(self) -> None:
        """Supervisor tick: after a forced reset, the old holder's late release
        would leave the value at 2 (no mutual exclusion); clamp it back."""
        if self.sem is not None and self.sem.value > 1:
            log.error("registry lock value %d > 1 after a recovery; clamping to 1",
                      self.sem.value)
            self.sem.value = 1

    def _count_recovery(self) -> None:
        count = struct.unpack("<I", self.shm.read(4, H_LOCKREC))[0]
        self.shm.write(PACK_I(count + 1), H_LOCKREC)

    # ---- supervisor side -------------------------------------------------------
    def claim_slot(self) -> int:
        """A free slot, marked reserved (before fork). RegistryError if full."""
        with self._locked():
            for index, offset in enumerate(self._offsets):
                if self.shm.read(1, offset + 14)[0] == FREE:
                    self.shm.write(SLOT.pack(0, 0, 0, 0, RESERVED, 0, b"", b"",
                                             0.0, 0.0, time.time()), offset)
                    return index
        raise RegistryError("no free registry slot")

    def set_slot(self, index: int, pid: int, generation: int) -> None:
        now = time.time()
        self.shm.write(SLOT.pack(pid, generation, 0, 0, IDLE, 0, b"", b"", now, now, now),
                       self._offsets[index])

    set_slot_pid = set_slot  # the name docs/ARCHITECTURE.md uses

    def release_slot(self, index: int) -> None:
        """Only after waitpid: the pid is gone for good."""
        with self._locked():
            self.shm.write(bytes(SLOT_SIZE), self._offsets[index])

    def set_generation(self, generation: int) -> None:
        self.shm.write(PACK_I(generation), H_GEN)

    def set_state(self, state: str) -> None:
        self.shm.write(bytes([SUPERVISOR_STATES.index(state)]), H_STATE)

    def set_reload(self, status: str, reason: str = "", now: float | None = None,
                   whole: str | None = None) -> None:
        """reload_status for qsmtpctl reload: 'ok' or 'failed' with a reason.
        The header keeps 48 bytes of it; the published file the whole reason
        (`whole`, e.g. with the file name in front)."""
        now = time.time() if now is None else now
        self.publish(reload={"status": status, "reason": whole or reason, "time": now})
        self.set_header(reload_time=now)
        self.shm.write(encode_text(reason, 48), 80)
        self.shm.write(bytes([RELOAD_STATUS.index(status)]), H_RELOAD)

    def publish(self, **info: Any) -> None:
        """Owner: add to the published file what the fixed-size header cannot
        hold (the whole reload reason, the config file, why it is invalid)."""
        try:
            data = read_published(self.runtime_dir)
            if not data or data.get("shm_id") != self.shm.id:
                return
            data.update(info)
            _publish(self.runtime_dir, data)
        except OSError as exc:  # status detail only: never worth failing over
            log.warning("cannot update %s: %s", self.path, exc)

    def published(self) -> dict[str, Any]:
        """Reader: the published file of this registry ({} if replaced)."""
        try:
            data = read_published(self.runtime_dir)
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

    def add_sessions(self, count: int) -> None:
        with self._locked():
            self._add_sessions(count)

    def _add_sessions(self, count: int) -> None:
        total = struct.unpack("<Q", self.shm.read(8, H_SESSIONS))[0]
        self.shm.write(struct.pack("<Q", total + count), H_SESSIONS)

    def worker_pids(self) -> list[int]:
        raw = self.shm.read(self.slots * SLOT_SIZE, HEADER_SIZE)
        return [pid for (pid,) in (struct.unpack_from("<I", raw, i * SLOT_SIZE)
                                   for i in range(self.slots)) if pid]

    # ---- worker side -------------------------------------------------------------
    def mark_busy(self, index: int, peer_ip: str | None, service: str,
                  max_from_ip: int) -> int | None:
        """Atomically: refuse (return the count of this IP's other sessions)
        when it has max_from_ip already, else mark the slot busy -> None."""
        family, raw = normalise_peer(peer_ip)
        mine = self._offsets[index]
        record = bytes([BUSY, family]) + raw
        with self._locked():
            if family and max_from_ip > 0:
                area = self.shm.read(self.slots * SLOT_SIZE, HEADER_SIZE)
                count = 0
                for offset in self._offsets:
                    start = offset - HEADER_SIZE + S_MATCH
                    if offset != mine and area[start:start + 18] == record:
                        count += 1
                if count >= max_from_ip:
                    return count
            self.shm.write(record + encode_text(service, 16) + PACK_D(time.time()),
                           mine + S_MATCH)
        return None

    def mark_idle(self, index: int, sessions_served: int) -> None:
        """End of a session: slot idle again, and one more in sessions_total."""
        offset = self._offsets[index]
        with self._locked():
            self.shm.write(PACK_I(sessions_served), offset + S_SESSIONS)
            self.shm.write(bytes([IDLE, 0]) + bytes(32) + PACK_D(time.time()),
                           offset + S_MATCH)
            self._add_sessions(1)

    def heartbeat(self, index: int, now: float | None = None) -> None:
        """Own field only, no lock: one 8-byte aligned write."""
        self.shm.write(PACK_D(time.time() if now is None else now),
                       self._offsets[index] + S_HEARTBEAT)

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
        return decode(raw, consistent)


def _dir_gid(path: str) -> int | None:
    try:
        return os.stat(path).st_gid
    except OSError:
        return None
