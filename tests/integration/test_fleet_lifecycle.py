"""Worker life cycle: recycling after child_lifetime sessions, the heartbeat
watchdog (and a wall-clock step that must not trip it), and idle workers
above the target retiring after a burst."""

from __future__ import annotations

import os
import signal
import smtplib
import time

from helpers.server import alive, connect, wait_for


def send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@client.test", ["u@example.test"], "Subject: t\r\n\r\nx\r\n")


def test_workers_retire_after_their_lifetime(serve):
    srv = serve(children=2, idle_children=1, child_lifetime=2, max_from_ip=0)
    seen = set()
    for _ in range(12):
        send(srv.port)
        seen.update(w["pid"] for w in srv.snapshot()["workers"])
    # lifetime 2 +-25 % -> at most 3 sessions each: 12 sessions need >= 4 workers
    assert len(seen) >= 4, seen
    wait_for(lambda: srv.snapshot()["supervisor"]["sessions_total"] == 12, 2)
    assert all(w["sessions"] <= 3 for w in srv.snapshot()["workers"])
    assert "died" not in srv.log()  # recycling is not a crash: no throttling


def test_silent_worker_is_killed_and_replaced(serve):
    # timeout and hook_timeout 1 -> a busy worker silent for > 2 s is wedged
    srv = serve(children=3, idle_children=1, timeout=1, hook_timeout=1)
    sock, line = connect(srv.port)
    assert line.startswith(b"220")
    busy = wait_for(lambda: [w["pid"] for w in srv.snapshot()["workers"]
                             if w["state"] == "busy"], 2)[0]
    os.kill(busy, signal.SIGSTOP)  # wedged: no heartbeat, no timeout
    try:
        t0 = time.monotonic()
        wait_for(lambda: not alive(busy), 5, what="wedged worker killed")
        print(f"\nwedged worker killed after {time.monotonic() - t0:.2f}s")
    finally:
        if alive(busy):
            os.kill(busy, signal.SIGCONT)
        sock.close()
    assert "silent for" in srv.log()
    wait_for(lambda: busy not in {w["pid"] for w in srv.snapshot()["workers"]}, 2)
    send(srv.port)


def test_surplus_idle_workers_retire_after_a_burst(serve):
    srv = serve(children=10, idle_children=2, max_from_ip=0)
    held = [connect(srv.port)[0] for _ in range(6)]
    wait_for(lambda: len(srv.workers()) == 8, 2, what="6 busy + 2 idle")
    for sock in held:
        sock.close()
    t0 = time.monotonic()
    wait_for(lambda: len(srv.workers()) == 2, 30, interval=0.2,
             what="back to idle_children")
    print(f"\nsurplus retired {time.monotonic() - t0:.1f}s after the burst")


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"  # apt: libfaketime


def test_wall_clock_step_kills_no_worker(serve, tmp_path, monkeypatch):
    """The heartbeat check is on CLOCK_MONOTONIC: the wall clock stepping an
    hour ahead (NTP, an operator's `date -s`) is no silence.  The daemon runs
    under libfaketime, whose offset file moves CLOCK_REALTIME only."""
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    monkeypatch.setenv("LD_PRELOAD", FAKETIME)
    monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(offset))
    monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
    monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    # limit 2 x 30 s: the busy worker below stays quiet well within it
    srv = serve(children=3, idle_children=2, timeout=30, hook_timeout=30)
    sock, line = connect(srv.port)
    assert line.startswith(b"220")
    sock.sendall(b"EHLO step.test\r\n")
    assert sock.recv(4096).startswith(b"250")
    def settled():  # busy + 2 idle, every one past its start
        states = sorted(w["state"] for w in srv.snapshot()["workers"])
        return states == ["busy", "idle", "idle"]
    wait_for(settled, 3, what="1 busy and 2 idle workers")
    before = {w["pid"] for w in srv.snapshot()["workers"]}
    offset.write_text("+1h\n")
    time.sleep(3.5)  # > 3 heartbeat checks (1 s apart) after the step
    assert {w["pid"] for w in srv.snapshot()["workers"]} == before
    sock.sendall(b"NOOP\r\n")
    assert sock.recv(4096).startswith(b"250")  # the quiet session lives on
    sock.sendall(b"QUIT\r\n")
    sock.close()
    assert "silent for" not in srv.log() and "died" not in srv.log()
