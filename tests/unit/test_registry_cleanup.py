"""What earlier runs left (registry_cleanup.py): a crashed run's stale
registry, an orphan whose published file was lost, a garbage published
file; and what is NOT ours: another instance's registry, stale or not."""

from __future__ import annotations

import json
import os

from helpers.registry import keys as _keys
from helpers.registry import published_key as _published_key
from qsmtp import registry_layout as layout
from qsmtp.registry import Registry


def _crashed_run(runtime_dir: str, slots: int = 2) -> int:
    """A "supervisor" that creates its registry and dies without cleaning up."""
    pid = os.fork()
    if pid == 0:
        try:
            Registry.create(runtime_dir, slots, os.getpid())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_stale_segment_of_crashed_run_is_replaced(runtime_dir, sysv_guard):
    _crashed_run(runtime_dir)
    sysv_guard.track(runtime_dir)
    with open(os.path.join(runtime_dir, "registry")) as handle:
        stale = json.load(handle)
    assert stale["key"] in _keys("shm")
    reg = Registry.create(runtime_dir, 2, os.getpid())
    sysv_guard.track(runtime_dir)
    assert stale["key"] not in _keys("shm") and stale["key"] not in _keys("sem")
    assert reg.snapshot()["supervisor"]["pid"] == os.getpid()
    reg.remove()


def test_orphan_without_published_file_is_removed(runtime_dir, sysv_guard):
    _crashed_run(runtime_dir, 3)  # crashes, and then its runtime_dir is wiped
    sysv_guard.track(runtime_dir)
    key = _published_key(runtime_dir)
    os.unlink(os.path.join(runtime_dir, "registry"))
    assert key in _keys("shm")
    Registry.create(runtime_dir, 2, os.getpid()).remove()
    assert key not in _keys("shm") and key not in _keys("sem")


def test_orphan_found_through_a_symlinked_runtime_dir(runtime_dir, sysv_guard):
    """The instance is the runtime dir's real path (/var/run -> /run)."""
    real = os.path.join(runtime_dir, "real")
    _crashed_run(real)
    sysv_guard.track(real)
    key = _published_key(real)
    os.unlink(os.path.join(real, "registry"))
    link = os.path.join(runtime_dir, "link")
    os.symlink(real, link)
    Registry.create(link, 2, os.getpid()).remove()
    assert key not in _keys("shm") and key not in _keys("sem")


def test_another_instances_stale_registry_is_left_for_its_qsmtpctl(runtime_dir, sysv_guard):
    """The root of a flake: any start removed every dead supervisor's
    segment, also another instance's that its qsmtpctl was about to report."""
    theirs, mine = os.path.join(runtime_dir, "theirs"), os.path.join(runtime_dir, "mine")
    dead = _crashed_run(theirs)
    sysv_guard.track(theirs)
    key = _published_key(theirs)
    Registry.create(mine, 2, os.getpid()).remove()
    assert key in _keys("shm") and key in _keys("sem")
    with Registry.attach(theirs) as stale:
        assert stale.snapshot()["supervisor"]["pid"] == dead
    Registry.create(theirs, 2, os.getpid()).remove()  # its own next start cleans up
    assert key not in _keys("shm") and key not in _keys("sem")


def test_another_instances_orphan_is_left_alone(runtime_dir, sysv_guard):
    theirs, mine = os.path.join(runtime_dir, "theirs"), os.path.join(runtime_dir, "mine")
    _crashed_run(theirs)
    sysv_guard.track(theirs)
    key = _published_key(theirs)
    os.unlink(os.path.join(theirs, "registry"))
    Registry.create(mine, 2, os.getpid()).remove()
    assert key in _keys("shm") and key in _keys("sem")
    Registry.create(theirs, 2, os.getpid()).remove()
    assert key not in _keys("shm") and key not in _keys("sem")


def test_header_names_the_instance(runtime_dir, sysv_guard):
    reg = Registry.create(runtime_dir, 1, os.getpid())
    sysv_guard.track(runtime_dir)
    try:
        head = reg.shm.read(layout.HEADER_SIZE)
        assert head[layout.H_INSTANCE:] == layout.instance_id(os.path.realpath(runtime_dir))
        assert layout.instance_id("/run/a") != layout.instance_id("/run/b")
    finally:
        reg.remove()


def test_garbage_published_file_is_replaced(runtime_dir, sysv_guard):
    with open(os.path.join(runtime_dir, "registry"), "w") as handle:
        handle.write("{torn")
    reg = Registry.create(runtime_dir, 2, os.getpid())
    sysv_guard.track(runtime_dir)
    reg.remove()


