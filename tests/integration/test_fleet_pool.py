"""The pool: idle_children spares at start, busy + idle_children under load
(capped at children), backlog instead of refusals above the cap."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers.server import connect, wait_for

QSMTPCTL = str(Path(sys.executable).with_name("qsmtpctl"))


def states(srv) -> tuple[int, int, int]:
    snap = srv.snapshot()
    busy = sum(1 for w in snap["workers"] if w["state"] == "busy")
    idle = sum(1 for w in snap["workers"] if w["state"] == "idle")
    return len(snap["workers"]), busy, idle


def test_pool_grows_with_load_and_backlogs_above_children(serve):
    srv = serve(children=15, idle_children=5, max_from_ip=0)
    wait_for(lambda: len(srv.workers()) == 5, 3, what="5 workers")
    assert states(srv) == (5, 0, 5)
    ctl = subprocess.run([QSMTPCTL, "status", "--json", "--config", str(srv.config_path)],
                         capture_output=True, text=True, timeout=10)
    assert ctl.returncode == 0, ctl.stderr
    doc = json.loads(ctl.stdout)
    assert (doc["pool"]["workers"], doc["pool"]["idle"], doc["pool"]["max"]) == (5, 5, 15)
    assert doc["supervisor"]["pid"] == srv.pid

    held = []
    try:
        for _ in range(12):
            sock, banner = connect(srv.port)
            assert banner.startswith(b"220"), banner
            held.append(sock)
        t0 = time.monotonic()
        wait_for(lambda: (lambda s: s[1] == 12 and s[2] >= 3)(states(srv)), 1.0,
                 what="12 busy, >= 3 idle")
        print(f"12 busy + >=3 idle after {time.monotonic() - t0:.3f}s")

        # 8 more: 15 served at once, the other 5 queue in the backlog
        for _ in range(3):
            sock, banner = connect(srv.port)
            assert banner.startswith(b"220"), banner
            held.append(sock)
        waiting = [socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                   for _ in range(5)]
        wait_for(lambda: states(srv)[1] == 15, 2, what="15 busy")
        for s in waiting:
            s.settimeout(0.3)
            # a timeout: still in the backlog, as it should be
            with contextlib.suppress(TimeoutError):
                assert s.recv(100) == b"", "a 16th session was served beyond children"
        # clients leave: the waiting ones are served, none refused
        for sock in held[:5]:
            sock.sendall(b"QUIT\r\n")
            sock.close()
        for s in waiting:
            s.settimeout(5)
            data = s.recv(512)
            assert data.startswith(b"220"), data
        held += waiting
    finally:
        for sock in held:
            sock.close()
    assert srv.stop() == 0


def test_burst_growth_5_to_15_is_fast(serve):
    srv = serve(children=15, idle_children=5, max_from_ip=0)
    wait_for(lambda: len(srv.workers()) == 5, 3, what="5 workers")
    held = []
    t0 = time.monotonic()
    try:
        for _ in range(15):
            sock, banner = connect(srv.port)
            assert banner.startswith(b"220")
            held.append(sock)
        wait_for(lambda: states(srv)[1] == 15, 3, what="15 busy")
        elapsed = time.monotonic() - t0
        print(f"\n5 -> 15 busy workers under a burst in {elapsed:.3f}s")
        assert elapsed < 2.0
    finally:
        for sock in held:
            sock.close()
