"""Crashes: waitpid is the truth.  A SIGKILLed worker's slot is freed and
replaced at once; a SIGKILLed supervisor takes its workers with it
(lifeline); the next start replaces the stale registry."""

from __future__ import annotations

import json
import os
import signal
import time

from helpers.server import alive, connect, sysv_ids, wait_for


def test_kill_busy_worker_frees_slot_and_refills(serve):
    srv = serve(children=6, idle_children=3, max_from_ip=0)
    wait_for(lambda: len(srv.workers()) == 3, 3, what="3 workers")
    sock, line = connect(srv.port)
    assert line.startswith(b"220")
    busy = wait_for(lambda: [w for w in srv.snapshot()["workers"] if w["state"] == "busy"],
                    2, what="a busy worker")[0]
    wait_for(lambda: len(srv.workers()) == 4, 2, what="pool grew to busy + 3")
    t0 = time.monotonic()
    os.kill(busy["pid"], signal.SIGKILL)

    def refilled():
        snap = srv.snapshot()
        pids = {w["pid"] for w in snap["workers"]}
        idle = sum(1 for w in snap["workers"] if w["state"] == "idle")
        return busy["pid"] not in pids and idle >= 3 and len(srv.workers()) == 3
    wait_for(refilled, 1.0, what="slot freed and pool refilled")
    print(f"\nkill -9 busy worker -> pool back in {time.monotonic() - t0:.3f}s")
    assert sock.recv(100) == b""  # that client lost its connection, nothing else
    sock.close()
    sock, line = connect(srv.port)
    assert line.startswith(b"220")
    sock.close()


def test_kill_supervisor_workers_follow_and_restart_replaces_registry(serve):
    srv = serve(children=4, idle_children=3, grace=2)
    workers = wait_for(lambda: len(srv.workers()) == 3 and srv.workers(), 3)
    held, line = connect(srv.port)  # a busy one too: PDEATHSIG reaches it
    assert line.startswith(b"220")
    busy = wait_for(lambda: [w["pid"] for w in srv.snapshot()["workers"]
                             if w["state"] == "busy"], 2)
    old_registry = (srv.runtime_dir / "registry").read_text()
    t0 = time.monotonic()
    srv.signal(signal.SIGKILL)
    srv.proc.wait(5)
    idle = [p for p in workers + srv.workers() if p not in busy]
    wait_for(lambda: not any(alive(p) for p in idle), 2.0, what="idle workers gone")
    print(f"\nkill -9 supervisor -> idle workers gone in {time.monotonic() - t0:.3f}s")
    # the orphaned busy worker gives its client 421 after grace, then leaves
    held.settimeout(5)
    assert held.recv(512).startswith(b"421"), "no 421 from the orphaned worker"
    held.close()
    wait_for(lambda: not any(alive(p) for p in busy), 2.0, what="busy worker gone")
    # a restart finds the stale registry and replaces it
    srv.start()
    assert (srv.runtime_dir / "registry").read_text() != old_registry
    assert srv.snapshot()["supervisor"]["pid"] == srv.pid
    # the old segment is gone (removed as stale here, or as an orphan by
    # another qsmtp starting meanwhile: tests run concurrently)
    stale = json.loads(old_registry)
    shm, sem = sysv_ids()
    assert str(stale["shm_id"]) not in shm and str(stale["sem_id"]) not in sem
    sock, line = connect(srv.port)
    assert line.startswith(b"220")
    sock.close()
