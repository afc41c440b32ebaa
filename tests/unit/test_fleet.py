"""Fleet's bookkeeping without forking: gossip -> state, and the boot-loop
back-off as the registry shows it (wall-clock time, cleared once over).
A real registry and a real App; no worker process is started (the pool
is kept at its target or the spawn is throttled)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from qsmtp import config as qconfig
from qsmtp import gossip
from qsmtp.app import App
from qsmtp.fleet import Fleet, WorkerRec
from qsmtp.registry import Registry

NO_SUCH_PID = 2**22 + 7  # above the largest pid_max: never a real process


@pytest.fixture
def fleet(reg: Registry, tmp_path) -> Iterator[Fleet]:
    path = tmp_path / "qsmtp.toml"
    path.write_text(f'[server]\nchildren = 2\nidle_children = 2\nstate_dir = "{tmp_path}"\n'
                    f'[queue]\npath = "{tmp_path / "maildir"}"\n')
    fleet = Fleet(app=App.load(qconfig.load(str(path))), listeners=[], registry=reg,
                  base_nice=None)
    yield fleet
    for fd in (fleet.wake_r, fleet.wake_w, fleet.lifeline_r, fleet.lifeline_w):
        os.close(fd)


def test_gossip_marks_ready_and_a_session_resets_the_back_off(fleet: Fleet):
    rec = fleet.workers[NO_SUCH_PID] = WorkerRec(NO_SUCH_PID, 0, 1, time.monotonic())
    assert fleet.read_gossip(gossip.encode(gossip.Kind.READY, 1)) is False  # not ours
    assert fleet.read_gossip(gossip.encode(gossip.Kind.READY, NO_SUCH_PID)) is True
    assert rec.ready and fleet.ready_count() == 1
    fleet.throttle.record_exit(0.0, time.monotonic())
    assert fleet.read_gossip(gossip.encode(gossip.Kind.IDLE, NO_SUCH_PID)) is False
    assert fleet.throttle.failures == 0


def test_back_off_written_as_wall_clock_time_then_cleared(fleet: Fleet, reg: Registry):
    fleet.throttle.record_exit(0.0, time.monotonic())  # one death at start: 0.1 s
    status = fleet.manage()  # throttled: nothing is forked
    assert fleet.workers == {} and "throttled: workers dying at start" in status
    until = reg.snapshot()["supervisor"]["throttled_until"]
    assert until is not None and time.time() < until <= time.time() + 0.1
    # Over: a pool at its target (two records not yet in the registry count
    # as starting spares), nothing to fork, the registry says "none".
    for pid in (NO_SUCH_PID, NO_SUCH_PID + 1):
        fleet.workers[pid] = WorkerRec(pid, 0, 1, time.monotonic())
    time.sleep(0.15)
    assert "throttled" not in fleet.manage()
    assert reg.snapshot()["supervisor"]["throttled_until"] is None
