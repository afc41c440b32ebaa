"""Performance regression guard (issue 6), fast enough for `make test`.

The full comparison with peers is `make bench` (docs/BENCHMARKS.md). These
checks keep the figures that are targets from quietly rotting:

- server CPU per message under smtp-source load (whole process tree, from
  /proc/PID/stat: what the machine pays per stored message);
- the idle fleet's memory: supervisor + 5 idle workers <= 31 MiB PSS (the
  target is 30; see IDLE_FLEET_PSS_MIB);
- what one busy worker un-shares: <= 4.5 MiB private dirty (see
  BUSY_WORKER_PRIVATE_MIB);
- the cold start on socket activation: first 220 in < 300 ms;
- the syscalls a worker makes per message (strace; a count, so the machine's
  load does not move it).

CPU and cold start are taken as the best of a few tries: other tests may run
beside this one on a 2-core CI machine, and noise only ever adds time, so the
best try is the honest figure for the code.
"""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import time
from pathlib import Path

from helpers.server import ACTIVATE, QSMTP, children_of, free_port, wait_for

CLK = os.sysconf("SC_CLK_TCK")
MIB = 1024
# The bench target is 1.0 ms; measured 1.2-1.5 ms on a quiet 2-core VM, but
# 2-3 ms while other jobs load it (CPU time itself inflates under contention:
# cache, file-system locks). The bound catches a real regression (a recv or
# fsync per line, per-line logging, a lost gc.freeze) without flaking.
CPU_MS_PER_MSG = 4.0
# The target is 30 MiB. PSS splits file pages among every process mapping
# them, so the same fleet reads less while other Python processes run. Its
# ceiling, what it reads when nothing else shares a page, is the fleet's
# unique physical pages (pagemap, as root): 30.7-30.8 MiB since issue 15's
# memory work (36.1 before: PSS then read 30.2-31.9 on a quiet machine,
# 23.5-27.7 on a busy one; now 24.7-26.0 busy). A lost gc.freeze reads 47;
# a heavy import (OpenSSL's libcrypto alone maps ~3 MB) fails it too.
IDLE_FLEET_PSS_MIB = 31
# What one busy worker un-shares (private dirty, smaps): unlike PSS it does not
# depend on what else runs on the machine. Measured 3.5-3.6 MiB here (100
# sessions each), 3.6-3.8 in the bench's fleet of 15 (4.0-4.2 before issue
# 15's gc discipline and warm-up); what is left is the pages CPython itself
# writes (reference counts of every object a session touches, the
# interpreter's static data). A lost gc.freeze reads 6.9; a per-worker copy of
# a table or a module imported after the fork adds 1 MiB or more.
BUSY_WORKER_PRIVATE_MIB = 4.5
COLD_START_S = 0.300
# One connection per message (case (a)), 5 KB: 32 syscalls per message in the
# worker (99 before issue 15, 87 after its first cuts; 52 with a non-blocking
# socket polled by the Reader: no ioctl per timeout, no poll before a send;
# registry writes through a memoryview: no shmctl; mark_idle unlocked; 35
# with no per-hook timer; 32 with no lock when max_from_ip is 0 and a BUSY
# wake-up only when spares run short).  epoll_wait/accept4 vary by ~0.3
# (both workers woken); a recv or write per line, a settimeout per read, a
# lost pid cache or a timer per hook each add 6 or more.
WORKER_SYSCALLS_PER_MSG = 37


def _tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children_of(pid))
    return out


def _cpu_seconds(root: int) -> float:
    """utime+stime+cutime+cstime over the tree: reaped workers stay counted."""
    total = 0
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])
    return total / CLK


def _pss_kib(pids: list[int], field: str = "Pss:") -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith(field):
                    total += int(line.split()[1])
    return total


def _stored(srv) -> int:
    return len(os.listdir(srv.maildir / "new"))


def test_cpu_per_message_under_load(serve):
    srv = serve(children=15, idle_children=5, max_from_ip=0, child_lifetime=100,
                extra_toml='[relay]\nclients = ["127.0.0.0/8"]\ndomains = ["example.com"]\n')
    wait_for(lambda: len(srv.workers()) >= 5, 10, what="5 workers")
    best, sent = None, 0
    for _ in range(3):
        count = 400
        cpu0 = _cpu_seconds(srv.pid)
        run = subprocess.run(
            ["/usr/sbin/smtp-source", "-s", "10", "-m", str(count), "-l", "5000",
             "-f", "sender@example.com", "-t", "rcpt@example.com", "-M", "client.example.com",
             f"127.0.0.1:{srv.port}"], capture_output=True, timeout=60)
        cpu = (_cpu_seconds(srv.pid) - cpu0) * 1000 / count
        assert run.returncode == 0, run.stderr
        sent += count
        best = cpu if best is None else min(best, cpu)
    assert _stored(srv) == sent  # every message durable in the maildir
    print(f"\nserver CPU per message: {best:.2f} ms (bound {CPU_MS_PER_MSG})")
    assert best <= CPU_MS_PER_MSG


def test_idle_fleet_pss(serve):
    srv = serve(children=15, idle_children=5, max_from_ip=0)
    wait_for(lambda: len(srv.workers()) == 5, 10, what="5 idle workers")
    time.sleep(1.0)  # let the pool settle; workers have done their set-up
    pids = [srv.pid] + srv.workers()
    assert len(pids) == 6
    pss = _pss_kib(pids) / MIB
    print(f"\nidle fleet (supervisor + 5 workers): {pss:.1f} MiB PSS")
    assert pss <= IDLE_FLEET_PSS_MIB


def test_busy_worker_private_memory(serve):
    srv = serve(children=4, idle_children=4, max_from_ip=0, child_lifetime=1000,
                extra_toml='[relay]\nclients = ["127.0.0.0/8"]\ndomains = ["example.com"]\n')
    wait_for(lambda: len(srv.workers()) == 4, 10, what="4 workers")
    subprocess.run(["/usr/sbin/smtp-source", "-s", "4", "-m", "400", "-l", "5000",
                    "-f", "sender@example.com", "-t", "rcpt@example.com",
                    "-M", "client.example.com", f"127.0.0.1:{srv.port}"],
                   check=True, capture_output=True, timeout=120)
    assert _stored(srv) == 400
    private = {pid: _pss_kib([pid], "Private_Dirty:") / MIB for pid in srv.workers()}
    print("\nbusy workers' private dirty: "
          + ", ".join(f"{mib:.2f}" for mib in sorted(private.values())) + " MiB")
    assert len(private) == 4  # the same workers served all of it
    assert max(private.values()) <= BUSY_WORKER_PRIVATE_MIB


def _cold_start(srv) -> float:
    """systemd-socket-activate holds the socket; the first connect() makes it
    exec `qsmtp serve`. Seconds from connect() to the 220 line."""
    port = free_port()
    proc = subprocess.Popen([ACTIVATE, "-l", f"127.0.0.1:{port}", QSMTP, "serve",
                             "--config", str(srv.config_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening():
            try:
                with open("/proc/net/tcp") as handle:
                    return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
                               for line in handle.read().splitlines()[1:])
            except OSError:
                return False
        wait_for(listening, 10, what="systemd-socket-activate listening")
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            line = sock.makefile("rb").readline()
            elapsed = time.monotonic() - t0
            assert line.startswith(b"220"), line
            sock.sendall(b"QUIT\r\n")
        return elapsed
    finally:
        workers = children_of(proc.pid)
        proc.terminate()
        proc.wait(20)
        for pid in workers:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}/stat")
                     or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                     5, what="worker gone")


def test_cold_start_socket_activation(serve):
    srv = serve(start=False, children=15, idle_children=5)
    times = [_cold_start(srv) for _ in range(3)]
    print("\ncold start (connect -> 220): " + ", ".join(f"{t * 1000:.0f} ms" for t in times))
    assert min(times) < COLD_START_S


def _worker_syscalls(trace: str, supervisor: int) -> collections.Counter:
    """Syscall names per pid other than the supervisor's, from `strace -f -o`."""
    counts: collections.Counter = collections.Counter()
    for line in trace.splitlines():
        match = re.match(r"(\d+)\s+(\w+)\(", line)
        if match and int(match.group(1)) != supervisor:
            counts[match.group(2)] += 1
    return counts


def test_worker_syscalls_per_message(serve, tmp_path):
    srv = serve(children=2, idle_children=1, max_from_ip=0,
                extra_toml='[relay]\nclients = ["127.0.0.0/8"]\ndomains = ["example.com"]\n')
    wait_for(lambda: len(srv.workers()) >= 1, 10, what="1 worker")
    source = ["/usr/sbin/smtp-source", "-s", "1", "-l", "5000", "-f", "sender@example.com",
              "-t", "rcpt@example.com", "-M", "client.example.com", f"127.0.0.1:{srv.port}"]
    subprocess.run(source[:1] + ["-m", "10"] + source[1:], check=True, timeout=60)  # warm
    out = tmp_path / "strace.out"
    pids = [srv.pid] + srv.workers()
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", str(out)]
                              + [arg for pid in pids for arg in ("-p", str(pid))],
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # attached (strace has no "ready" signal)
        count = 100
        subprocess.run(source[:1] + ["-m", str(count)] + source[1:], check=True, timeout=120)
        time.sleep(0.3)
    finally:
        tracer.terminate()
        tracer.wait(20)
    assert _stored(srv) == count + 10
    calls = _worker_syscalls(out.read_text(), srv.pid)
    per_msg = sum(calls.values()) / count
    print(f"\nworker syscalls per message: {per_msg:.1f} (bound {WORKER_SYSCALLS_PER_MSG}): "
          + ", ".join(f"{name} {n / count:.1f}" for name, n in calls.most_common()))
    assert calls["fsync"] == 2 * count  # the file and new/, per message
    assert per_msg <= WORKER_SYSCALLS_PER_MSG
