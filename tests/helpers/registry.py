"""Registry test helpers: the SysV leak guard, keys in the kernel, a worker
in a slot.  The fixtures built on them are in tests/unit/conftest.py."""

from __future__ import annotations

import contextlib
import json
import os

import sysv_ipc

from qsmtp.registry import Registry
from qsmtp.sysvipc import table


def keys(kind: str) -> set[int]:
    """The keys of every SysV object of this kind in the kernel."""
    return {int(row["key"]) for row in table(kind)}


def published_key(runtime_dir: str) -> int | None:
    try:
        with open(os.path.join(runtime_dir, "registry")) as handle:
            return int(json.load(handle)["key"])
    except (OSError, ValueError, KeyError):
        return None


def worker(reg: Registry, pid: int, generation: int = 1) -> int:
    """A slot claimed and set as the supervisor does for a forked worker."""
    index = reg.claim_slot()
    reg.set_slot(index, pid, generation)
    return index


class SysvGuard:
    """Tracks the keys our registries use and checks exactly those at the end:
    other test runs may create SysV objects concurrently, so comparing the
    whole `ipcs` table would be flaky.  Leftovers are removed, then reported."""

    def __init__(self) -> None:
        self.keys: set[int] = set()
        self.before_mine = self._mine()

    @staticmethod
    def _mine() -> set[int]:
        me = str(os.getpid())
        return {int(r["shmid"]) for r in table("shm") if r.get("cpid") == me}

    def track(self, runtime_dir: str) -> None:
        key = published_key(runtime_dir)
        if key is not None:
            self.keys.add(key)

    def leftovers(self) -> list[str]:
        left = []
        for key in self.keys & keys("shm"):
            left.append(f"shm key {key}")
            with contextlib.suppress(sysv_ipc.Error):
                sysv_ipc.SharedMemory(key).remove()
        for key in self.keys & keys("sem"):
            left.append(f"sem key {key}")
            with contextlib.suppress(sysv_ipc.Error):
                sysv_ipc.Semaphore(key).remove()
        for shm_id in self._mine() - self.before_mine:
            left.append(f"shm id {shm_id}")
            sysv_ipc.remove_shared_memory(shm_id)
        return left
