"""The SysV registry: layout, life cycle, slots, per-IP counting,
permissions, and no SysV object left behind (the lock: test_registry_lock.py;
leftovers of earlier runs: test_registry_cleanup.py)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time

import pytest

from helpers import as_user
from helpers.registry import worker as _worker
from qsmtp import registry_layout as layout
from qsmtp.registry import NotRunning, Registry, RegistryError
from qsmtp.registry_layout import normalise_peer


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
    assert layout.HEADER.size == layout.HEADER_SIZE == 128


def test_layout_offsets_are_the_structs():
    """The single-field offsets land on the fields HEADER/SLOT pack."""
    head = layout.HEADER.pack(layout.MAGIC, 2, 80, 7, 4242, 9, 3, 2, 0, 1.5, 11, 6, 2, 5, 1,
                              2.5, 3.5, b"why", b"instance")
    assert layout.header_slots(head) == 7 and layout.header_pid(head) == 4242
    assert (head[layout.H_GEN], head[layout.H_STATE], head[layout.H_RELOAD]) == (9, 3, 2)
    assert (head[layout.H_SESSIONS], head[layout.H_LOCKREC]) == (11, 1)
    assert head[layout.H_REASON:layout.H_REASON + 3] == b"why"
    assert head[layout.H_INSTANCE:] == b"instance"
    where = {"children": ("pool", "max"), "idle_children": ("pool", "idle_children"),
             "max_from_ip": ("pool", "max_from_ip"), "supervisor_pid": ("supervisor", "pid")}
    for name, (offset, fmt) in layout.HEADER_FIELDS.items():
        raw = bytearray(layout.HEADER_SIZE)
        struct.pack_into(fmt, raw, offset, 77)
        section, key = where.get(name, ("supervisor", name))
        assert layout.decode(bytes(raw))[section][key] == 77, name
    slot = layout.SLOT.pack(1, 2, 3, 0, layout.BUSY, 4, b"p" * 16, b"s" * 16, 1.0, 2.0, 3.0)
    assert slot[layout.S_STATE] == layout.BUSY and slot[layout.S_SESSIONS] == 3
    assert slot[layout.S_MATCH:layout.S_MATCH + layout.MATCH_SIZE] == bytes(
        [layout.BUSY, 4]) + b"p" * 16
    assert slot[layout.S_SERVICE:layout.S_SERVICE + layout.SERVICE_SIZE] == b"s" * 16
    assert struct.unpack_from("<dd", slot, layout.S_SINCE) == (1.0, 2.0)
    assert struct.unpack_from("<d", slot, layout.S_HEARTBEAT) == (2.0,)


# ---- life cycle ------------------------------------------------------------------
def test_create_publish_remove(runtime_dir, sysv_guard):
    reg = Registry.create(runtime_dir, 4, os.getpid())
    sysv_guard.track(runtime_dir)
    with open(os.path.join(runtime_dir, "registry")) as handle:
        published = json.load(handle)
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
    other = _worker(reg, 101)
    for served in range(1, 6):
        assert reg.mark_busy(other, "192.0.2.8", "smtp", 10) is None
        reg.mark_idle(other, served)
    snap = reg.snapshot()
    assert snap["supervisor"]["sessions_total"] == 6
    assert (snap["workers"][0]["state"], snap["workers"][0]["peer"],
            snap["workers"][0]["sessions"]) == ("idle", None, 1)
    assert snap["workers"][1]["sessions"] == 5
    reg.release_slot(other)
    # sessions_total survives the worker retiring
    reg.release_slot(index)
    assert reg.snapshot()["supervisor"]["sessions_total"] == 6


def test_spares_counts_idle_and_starting_against_the_idle_target(reg):
    reg.set_header(idle_children=2)
    assert reg.spares() == (0, 2)
    first, second = _worker(reg, 100), _worker(reg, 101)
    reg.claim_slot()  # a third, still starting
    assert reg.spares() == (3, 2)
    reg.mark_busy(first, "192.0.2.1", "smtp", 0)
    reg.mark_busy(second, "192.0.2.2", "smtp", 10)
    assert reg.spares() == (1, 2)
    reg.mark_idle(first, 1)
    assert reg.spares() == (2, 2)


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
        except BaseException:  # noqa: BLE001 - the forked child reports by exit code
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    (worker,) = reg.snapshot()["workers"]
    assert (worker["pid"], worker["state"], worker["peer"]) == (pid, "busy", "10.0.0.1")


# ---- permissions -----------------------------------------------------------------
def _as_nobody(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([*as_user.setpriv("nobody", "nogroup"), *as_user.python(), "-c", code],
                          capture_output=True, text=True, timeout=30, env=as_user.env())


def test_reader_without_group_gets_permission_error_naming_group(reg):
    code = ("from qsmtp.registry import Registry, RegistryPermissionError\n"
            f"try:\n    Registry.attach({reg.runtime_dir!r})\n"
            "except RegistryPermissionError as e:\n    print(e.group); print(e)\n")
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


# ---- the kernel's tables ------------------------------------------------------------
def test_sysvipc_rows_name_the_registry_objects(reg):
    from qsmtp import sysvipc

    shm = sysvipc.row("shm", reg.shm.id)
    assert shm is not None and int(shm["key"]) == reg.shm.key
    assert (int(shm["cpid"]), int(shm["cuid"])) == (os.getpid(), os.geteuid())
    assert sysvipc.key("shm", reg.shm.id) == reg.shm.key
    assert sysvipc.gid("sem", reg.sem.id) == os.getegid()
    assert sysvipc.row("shm", -1) is None and sysvipc.gid("shm", -1) is None
    assert sysvipc.table("no-such-table") == []
