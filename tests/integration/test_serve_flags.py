"""The operator flags on real daemons: --pid-file, --detach, --user,
--renice-parent, --pretty-child, --quiet/--debug, and start-up errors."""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import tempfile
from pathlib import Path

from helpers.server import alive, connect, wait_for


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].split()[0]
    raise KeyError(name)


def nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def send_one(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@client.test", ["u@example.test"], "Subject: t\r\n\r\nhi\r\n")


def test_pid_file_refuses_live_replaces_stale_removed_at_stop(serve):
    first = serve(flags=["--pid-file", "../common.pid"], name="a")
    pid_file = first.dir.parent / "common.pid"
    assert pid_file.read_text().strip() == str(first.pid)
    second = serve(start=False, flags=["--pid-file", "../common.pid"], name="b")
    result = second.run_once()
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and str(first.pid) in result.stderr
    assert first.stop() == 0
    assert not pid_file.exists()
    pid_file.write_text("999999\n")  # stale: no such process
    second.start()
    assert pid_file.read_text().strip() == str(second.pid)


def test_bind_failure_is_one_line(serve):
    srv = serve(children=2, idle_children=1)
    clash = serve(start=False, listen=[f"127.0.0.1:{srv.port}"], name="clash")
    result = clash.run_once()
    assert result.returncode == 1
    assert result.stderr.startswith("qsmtp: cannot listen on 127.0.0.1:")
    assert "Traceback" not in result.stderr


def test_bad_toml_at_start_exits_78(serve):
    srv = serve(start=False)
    srv.config_path.write_text("[server]\nchildren = 'lots'\n")
    result = srv.run_once()
    assert result.returncode == 78
    assert result.stderr.strip() == (f"qsmtp: {srv.config_path}: server.children: "
                                     "must be an integer (got 'lots')")


def test_detach_writes_mainpid_and_stops_cleanly(serve):
    srv = serve(start=False, flags=["--detach", "--pid-file", "qsmtp.pid"])
    srv.start(wait=False)
    assert srv.proc.wait(10) == 0  # the launcher returns at once
    pid_file = srv.dir / "qsmtp.pid"
    daemon = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 5))
    srv.seen_pids.add(daemon)
    snap = wait_for(lambda: (lambda s: s if s and s["supervisor"]["state"] == "running"
                             else None)(srv.snapshot(quiet=True)), 10)
    assert snap["supervisor"]["pid"] == daemon != srv.pid
    assert os.getsid(daemon) != os.getsid(0)  # its own session, no terminal
    send_one(srv.port)
    os.kill(daemon, signal.SIGTERM)
    wait_for(lambda: not alive(daemon), 10, what="detached daemon gone")
    assert not pid_file.exists()


def test_pretty_child_titles_and_renice_parent(serve):
    srv = serve(flags=["--pretty-child", "--renice-parent", "3"], children=3,
                idle_children=2)
    base = nice(os.getpid())
    assert cmdline(srv.pid) == "qsmtp: supervisor"
    assert nice(srv.pid) == base + 3
    workers = wait_for(lambda: len(srv.workers()) == 2 and srv.workers(), 3)
    for pid in workers:
        wait_for(lambda: cmdline(pid) == "qsmtp: worker idle", 2)
        assert nice(pid) == base  # the increment is the supervisor's only
    sock, line = connect(srv.port)
    try:
        wait_for(lambda: any(cmdline(p) == "qsmtp: worker busy 127.0.0.1"
                             for p in srv.workers()), 2, what="busy title")
    finally:
        sock.close()


def test_quiet_and_debug(serve):
    quiet = serve(flags=["--quiet"], name="quiet", children=2, idle_children=1)
    debug = serve(flags=["--debug"], name="debug", children=2, idle_children=1)
    for srv in (quiet, debug):
        send_one(srv.port)
        assert srv.stop() == 0
    # Not started by systemd: no sd-daemon <N> prefixes, Postfix-style labels.
    assert "queued as" not in quiet.log() and "debug: " not in quiet.log()
    assert "debug: " in debug.log() and "queued as" in debug.log()
    assert not re.search(r"(?m)^<\d>", quiet.log() + debug.log())


def test_user_drops_supervisor_and_workers(serve):
    # pytest's tmp dirs are root-only (0700): this one must be reachable by nobody
    base = Path(tempfile.mkdtemp(prefix="qsmtp-user-"))
    try:
        base.chmod(0o755)
        srv = serve(start=False, flags=["--user", "nobody", "--pid-file", "run/q.pid"],
                    name=str(base / "s"), children=3, idle_children=2)
        srv.start()
        nobody = "65534"
        assert status_field(srv.pid, "Uid") == nobody
        workers = wait_for(lambda: len(srv.workers()) == 2 and srv.workers(), 3)
        assert all(status_field(p, "Uid") == nobody for p in workers)
        assert (srv.runtime_dir).stat().st_uid == 65534
        send_one(srv.port)
        wait_for(lambda: srv.snapshot()["supervisor"]["sessions_total"] == 1, 2)
        assert srv.stop() == 0
        assert not (srv.runtime_dir / "registry").exists()
        assert not (srv.runtime_dir / "q.pid").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
