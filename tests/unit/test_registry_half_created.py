"""A start killed while it creates the registry (zero-filling a segment of
many slots takes a while) leaves a segment with no header.  The stale-object
cleanup looked for the header's magic and skipped it forever; now the key is
published before the segment exists, and the next start removes what it
finds under that key (issue 12.2)."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pytest
import sysv_ipc

from qsmtp.registry import Registry
from qsmtp.registry_layout import HEADER_SIZE, SLOT_SIZE


def _exists(key: int) -> bool:
    try:
        sysv_ipc.SharedMemory(key).detach()
    except sysv_ipc.ExistentialError:
        return False
    return True


@pytest.fixture
def runtime_dir(tmp_path):
    return str(tmp_path / "run")


def test_a_start_killed_mid_creation_is_cleaned_up_by_the_next(runtime_dir, monkeypatch):
    child = os.fork()
    if child == 0:  # the interrupted start: killed right after the objects exist
        monkeypatch.setattr(Registry, "_write_header",
                            lambda self, pid, slots: os.kill(os.getpid(), signal.SIGKILL))
        try:
            Registry.create(runtime_dir, 4, os.getpid())
        finally:
            os._exit(1)
    assert os.waitpid(child, 0)[1] & 0x7F == signal.SIGKILL
    with open(os.path.join(runtime_dir, "registry")) as handle:
        key = json.load(handle)["key"]
    shm = sysv_ipc.SharedMemory(key)
    assert shm.read(8) == bytes(8)  # no header, no magic
    shm.detach()
    registry = Registry.create(runtime_dir, 4, os.getpid())
    try:
        assert not _exists(key)
        with pytest.raises(sysv_ipc.ExistentialError):
            sysv_ipc.Semaphore(key)
    finally:
        registry.remove()


def test_a_headerless_segment_under_the_published_key_is_removed(runtime_dir):
    os.makedirs(runtime_dir)
    shm = sysv_ipc.SharedMemory(None, sysv_ipc.IPC_CREX, mode=0o640,
                                size=HEADER_SIZE + 8 * SLOT_SIZE, init_character=b"\0")
    sem = sysv_ipc.Semaphore(shm.key, sysv_ipc.IPC_CREX, mode=0o640, initial_value=1)
    key = shm.key
    shm.detach()
    with open(os.path.join(runtime_dir, "registry"), "w") as handle:
        json.dump({"key": key, "pid": 999999, "version": 1}, handle)
    try:
        registry = Registry.create(runtime_dir, 4, os.getpid())
        registry.remove()
        assert not _exists(key)
    finally:
        for remove in (lambda: sysv_ipc.remove_shared_memory(shm.id), sem.remove):
            with contextlib.suppress(sysv_ipc.Error):
                remove()


def test_an_attached_segment_under_the_key_is_left_alone(runtime_dir):
    """Someone still has it attached: not a dead start's leftover."""
    os.makedirs(runtime_dir)
    shm = sysv_ipc.SharedMemory(None, sysv_ipc.IPC_CREX, size=HEADER_SIZE + SLOT_SIZE)
    with open(os.path.join(runtime_dir, "registry"), "w") as handle:
        json.dump({"key": shm.key, "pid": 999999}, handle)
    try:
        Registry.create(runtime_dir, 4, os.getpid()).remove()
        assert _exists(shm.key)
    finally:
        shm.detach()
        shm.remove()
