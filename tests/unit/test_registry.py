"""The SysV registry: layout, per-IP counting, stale segments, permissions,
lock recovery, and no SysV object left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import sysv_ipc

from helpers import as_user
from qsmtp import registry as regmod
from qsmtp import registry_layout as layout
from qsmtp.registry import (
    NotRunning,
    Registry,
    RegistryError,
    normalise_peer,
)
import contextlib


# ---- leak guard (also used by test_ctl*.py) --------------------------------------
def _table(kind: str) -> list[dict[str, str]]:
    with open(f"/proc/sysvipc/{kind}") as handle:
        lines = handle.read().splitlines()
    names = lines[0].split()
    return [dict(zip(names, line.split())) for line in lines[1:]]


def _keys(kind: str) -> set[int]:
    return {int(row["key"]) for row in _table(kind)}


def _published_key(runtime_dir: str) -> int | None:
    try:
        with open(os.path.join(runtime_dir, "registry")) as handle:
            return int(json.load(handle)["key"])
    except (OSError, ValueError, KeyError):
        return None


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
        return {int(r["shmid"]) for r in _table("shm") if r.get("cpid") == me}

    def track(self, runtime_dir: str) -> None:
        key = _published_key(runtime_dir)
        if key is not None:
            self.keys.add(key)

    def leftovers(self) -> list[str]:
        left = []
        for key in self.keys & _keys("shm"):
            left.append(f"shm key {key}")
            with contextlib.suppress(sysv_ipc.Error):
                sysv_ipc.SharedMemory(key).remove()
        for key in self.keys & _keys("sem"):
            left.append(f"sem key {key}")
            with contextlib.suppress(sysv_ipc.Error):
                sysv_ipc.Semaphore(key).remove()
        for shm_id in self._mine() - self.before_mine:
            left.append(f"shm id {shm_id}")
            sysv_ipc.remove_shared_memory(shm_id)
        return left


@pytest.fixture
def sysv_guard():
    guard = SysvGuard()
    yield guard
    assert guard.leftovers() == []


@pytest.fixture
def runtime_dir():
    # Not tmp_path: /tmp/pytest-of-root is 0700 and the permission tests run
    # readers as nobody, who must be able to reach the published file.
    path = tempfile.mkdtemp(prefix="qsmtp-reg-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def reg(runtime_dir, sysv_guard):
    registry = Registry.create(runtime_dir, 8, os.getpid())
    sysv_guard.track(runtime_dir)
    yield registry
    registry.remove()


def _worker(reg: Registry, pid: int, generation: int = 1) -> int:
    index = reg.claim_slot()
    reg.set_slot(index, pid, generation)
    return index


# ---- peers -----------------------------------------------------------------------
@pytest.mark.parametrize("text, family, shown", [
    ("1.2.3.4", 4, "1.2.3.4"),
    ("::ffff:1.2.3.4", 4, "1.2.3.4"),
    ("::FFFF:1.2.3.4", 4, "1.2.3.4"),
    ("2001:db8::1", 6, "2001:db8::1"),
    ("2001:DB8:0::1", 6, "2001:db8::1"),
    ("fe80::1%eth0", 6, "fe80::1"),
    ("::1", 6, "::1"),
    ("", 0, None),
    (None, 0, None),
    ("not-an-ip", 0, None),
    ("/run/qsmtp.sock", 0, None),
])
def test_normalise_peer(text, family, shown):
    got_family, raw = normalise_peer(text)
    assert got_family == family and len(raw) == 16
    assert layout.format_peer(got_family, raw) == shown


@pytest.mark.parametrize("text, plain", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("::FFFF:c000:207", "192.0.2.7"),
    ("fe80::1%eth0", "fe80::1"),
    ("2001:db8::1", "2001:db8::1"),
    ("/run/qsmtp.sock", "/run/qsmtp.sock"),
])
def test_plain_ip_is_the_worker_and_registry_form(text, plain):
    from qsmtp.worker import peer_of

    assert layout.plain_ip(text) == plain
    assert peer_of((text, 25)) == (plain, 25)


def test_layout_sizes():
    assert layout.SLOT_SIZE == 80
    assert layout.HEADER.size <= layout.HEADER_SIZE == 128


# ---- life cycle ------------------------------------------------------------------
def test_create_publish_remove(runtime_dir, sysv_guard):
    reg = Registry.create(runtime_dir, 4, os.getpid())
    sysv_guard.track(runtime_dir)
    published = json.load(open(os.path.join(runtime_dir, "registry")))
    assert published["pid"] == os.getpid() and published["shm_id"] == reg.shm.id
    assert oct(os.stat(os.path.join(runtime_dir, "registry")).st_mode & 0o777) == "0o644"
    assert reg.shm.mode & 0o777 == 0o640 and reg.sem.mode & 0o777 == 0o640
    assert reg.shm.size == layout.HEADER_SIZE + 4 * layout.SLOT_SIZE
    assert reg.exists()
    reg.remove()
    reg.remove()  # idempotent
    assert not os.path.exists(os.path.join(runtime_dir, "registry"))
    with pytest.raises(NotRunning):
        Registry.attach(runtime_dir)


def test_attach_without_anything_is_not_running(runtime_dir):
    with pytest.raises(NotRunning) as info:
        Registry.attach(runtime_dir)
    assert f"no registry at {runtime_dir}/registry" in str(info.value)


def test_attach_after_segment_vanished(runtime_dir, sysv_guard):
    reg = Registry.create(runtime_dir, 2, os.getpid())
    sysv_guard.track(runtime_dir)
    reg.shm.remove()
    reg.detach()
    reg.sem.remove()
    with pytest.raises(NotRunning):
        Registry.attach(runtime_dir)
    os.unlink(os.path.join(runtime_dir, "registry"))


def test_second_live_instance_refused(reg, runtime_dir):
    with pytest.raises(RegistryError, match=f"another qsmtp \\(pid {os.getpid()}\\)"):
        Registry.create(runtime_dir, 2, os.getpid())
    with Registry.attach(runtime_dir) as reader:
        assert reader.snapshot()["supervisor"]["pid"] == os.getpid()


def test_stale_segment_of_crashed_run_is_replaced(runtime_dir, sysv_guard):
    pid = os.fork()
    if pid == 0:  # a "supervisor" that crashes without cleaning up
        try:
            Registry.create(runtime_dir, 2, os.getpid())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    sysv_guard.track(runtime_dir)
    stale = json.load(open(os.path.join(runtime_dir, "registry")))
    assert stale["key"] in _keys("shm")
    reg = Registry.create(runtime_dir, 2, os.getpid())
    sysv_guard.track(runtime_dir)
    assert stale["key"] not in _keys("shm") and stale["key"] not in _keys("sem")
    assert reg.snapshot()["supervisor"]["pid"] == os.getpid()
    reg.remove()


def test_orphan_without_published_file_is_removed(runtime_dir, sysv_guard):
    pid = os.fork()
    if pid == 0:  # crashes, and then its runtime_dir is wiped
        try:
            Registry.create(runtime_dir, 3, os.getpid())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    sysv_guard.track(runtime_dir)
    key = _published_key(runtime_dir)
    os.unlink(os.path.join(runtime_dir, "registry"))
    assert key in _keys("shm")
    Registry.create(runtime_dir, 2, os.getpid()).remove()
    assert key not in _keys("shm") and key not in _keys("sem")


def test_garbage_published_file_is_replaced(runtime_dir, sysv_guard):
    with open(os.path.join(runtime_dir, "registry"), "w") as handle:
        handle.write("{torn")
    reg = Registry.create(runtime_dir, 2, os.getpid())
    sysv_guard.track(runtime_dir)
    reg.remove()


# ---- slots -----------------------------------------------------------------------
def test_claim_set_release(reg):
    first, second = reg.claim_slot(), reg.claim_slot()
    assert (first, second) == (0, 1)
    assert [w["state"] for w in reg.snapshot()["workers"]] == ["starting", "starting"]
    reg.set_slot(first, 4242, 3)
    reg.release_slot(second)
    workers = reg.snapshot()["workers"]
    assert [(w["pid"], w["state"], w["generation"]) for w in workers] == [(4242, "idle", 3)]
    assert reg.worker_pids() == [4242]
    for _ in range(7):
        reg.claim_slot()
    with pytest.raises(RegistryError, match="no free registry slot"):
        reg.claim_slot()


def test_header_fields(reg):
    reg.set_generation(7)
    reg.set_header(state="running", children=15, idle_children=5, max_from_ip=10,
                   throttled_until=123.5)
    reg.set_reload("failed", "conf: server.children: must be at least 1", now=99.0)
    snap = reg.snapshot()
    sup = snap["supervisor"]
    assert (sup["generation"], sup["state"], sup["reload_status"]) == (7, "running", "failed")
    assert sup["reload_reason"].startswith("conf: server.children")
    assert sup["reload_time"] == 99.0 and sup["throttled_until"] == 123.5
    assert snap["pool"] == {"max": 15, "slots": 8, "idle_children": 5, "max_from_ip": 10}
    reg.set_reload("ok")
    assert reg.snapshot()["supervisor"]["reload_reason"] == ""


def test_mark_busy_idle_and_sessions_total(reg):
    index = _worker(reg, 100)
    assert reg.mark_busy(index, "::ffff:192.0.2.7", "submission", 10) is None
    (worker,) = reg.snapshot()["workers"]
    assert (worker["state"], worker["peer"], worker["service"]) == \
        ("busy", "192.0.2.7", "submission")
    assert time.time() - worker["since"] < 5
    reg.heartbeat(index, now=1234.5)
    assert reg.snapshot()["workers"][0]["heartbeat"] == 1234.5
    reg.mark_idle(index, 1)
    reg.add_sessions(5)
    snap = reg.snapshot()
    assert snap["supervisor"]["sessions_total"] == 6
    assert (snap["workers"][0]["state"], snap["workers"][0]["peer"],
            snap["workers"][0]["sessions"]) == ("idle", None, 1)
    # sessions_total survives the worker retiring
    reg.release_slot(index)
    assert reg.snapshot()["supervisor"]["sessions_total"] == 6


@pytest.mark.parametrize("others, newcomer, limit, refused", [
    ([], "1.2.3.4", 1, None),
    (["1.2.3.4"], "1.2.3.4", 1, 1),
    (["1.2.3.4"], "::ffff:1.2.3.4", 1, 1),       # mapped == plain IPv4
    (["::ffff:1.2.3.4"], "1.2.3.4", 2, None),
    (["::ffff:1.2.3.4", "1.2.3.4"], "1.2.3.4", 2, 2),
    (["2001:db8::1"], "2001:db8::1", 1, 1),
    (["2001:db8::1"], "2001:db8::2", 1, None),
    (["1.2.3.4", "1.2.3.4", "1.2.3.4"], "1.2.3.4", 0, None),  # 0 = off
    (["1.2.3.4"], "1.2.3.5", 1, None),
    ([None], None, 1, None),                       # no IP: never counted
])
def test_max_from_ip(reg, others, newcomer, limit, refused):
    for n, ip in enumerate(others):
        assert reg.mark_busy(_worker(reg, 200 + n), ip, "smtp", 0) is None
    mine = _worker(reg, 300)
    assert reg.mark_busy(mine, newcomer, "smtp", limit) == refused
    state = [w["state"] for w in reg.snapshot()["workers"] if w["pid"] == 300]
    assert state == (["idle"] if refused else ["busy"])


def test_idle_slot_with_same_peer_is_not_counted(reg):
    first = _worker(reg, 1)
    reg.mark_busy(first, "1.2.3.4", "smtp", 1)
    reg.mark_idle(first, 1)
    assert reg.mark_busy(_worker(reg, 2), "1.2.3.4", "smtp", 1) is None


def test_own_slot_counts_once(reg):
    """A worker re-marking its own slot busy does not count itself."""
    index = _worker(reg, 1)
    assert reg.mark_busy(index, "1.2.3.4", "smtp", 1) is None
    assert reg.mark_busy(index, "1.2.3.4", "smtp", 1) is None


def test_worker_after_fork_writes_shared_memory(reg):
    index = _worker(reg, 0)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            reg.set_slot(index, os.getpid(), 2)
            code = 0 if reg.mark_busy(index, "10.0.0.1", "smtp", 5) is None else 3
            reg.heartbeat(index)
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    (worker,) = reg.snapshot()["workers"]
    assert (worker["pid"], worker["state"], worker["peer"]) == (pid, "busy", "10.0.0.1")


# ---- the lock --------------------------------------------------------------------
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
        monkeypatch.setattr(regmod, "LOCK_TIMEOUT", 0.2)
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


# ---- permissions -----------------------------------------------------------------
def _as_nobody(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([*as_user.setpriv("nobody", "nogroup"), *as_user.python(), "-c", code],
                          capture_output=True, text=True, timeout=30, env=as_user.env())


def test_reader_without_group_gets_permission_error_naming_group(reg):
    code = ("import sys\nfrom qsmtp.registry import Registry, RegistryPermissionError\n"
            "try:\n    Registry.attach(sys.argv[1] if len(sys.argv) > 1 else %r)\n"
            "except RegistryPermissionError as e:\n    print(e.group); print(e)\n"
            % reg.runtime_dir)
    result = _as_nobody(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "root"
    assert "permission denied (join group root)" in result.stdout


def test_group_reader_snapshots_read_only(runtime_dir, sysv_guard):
    import grp
    gid = grp.getgrnam("nogroup").gr_gid
    reg = Registry.create(runtime_dir, 2, os.getpid(), owner_gid=gid)
    sysv_guard.track(runtime_dir)
    try:
        reg.mark_busy(_worker(reg, 9), "1.2.3.4", "smtp", 1)
        code = ("from qsmtp.registry import Registry\n"
                f"s = Registry.attach({runtime_dir!r}).snapshot(timeout=0.1)\n"
                "print(s['workers'][0]['peer'], s['consistent'])\n")
        result = _as_nobody(code)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["1.2.3.4", "True"]
    finally:
        reg.remove()
