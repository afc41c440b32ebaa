"""A config mistake never closes the port, and reloads that fail say so:
real `qsmtp serve` under systemd-socket-activate (the sockets systemd would
hand over), driven with the real `qsmtpctl`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from helpers.server import connect, wait_for

QSMTPCTL = os.path.join(os.path.dirname(sys.executable), "qsmtpctl")


def ctl(srv, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([QSMTPCTL, *args, "--config", str(srv.config_path)],
                          capture_output=True, text=True, timeout=60)


def set_key(srv, key: str, value: str | None) -> None:
    """[server] key = value (None: remove it)."""
    lines = [line for line in srv.config_path.read_text().splitlines()
             if not line.startswith(f"{key} = ")]
    if value is not None:
        lines.insert(lines.index("[server]") + 1, f"{key} = {value}")
    srv.config_path.write_text("\n".join(lines) + "\n")


def test_invalid_config_at_start_answers_421_until_a_reload_fixes_it(serve):
    srv = serve(start=False, socket_activate=["smtp"], children=4, idle_children=2)
    set_key(srv, "children", "0")
    srv.start()
    first = srv.activate()
    line = first.makefile("rb").readline()
    first.close()
    assert line == b"421 4.3.0 mx.test configuration error, try again later\r\n"
    ready = wait_for(lambda: srv.notify.first("READY=1"), 10, what="READY=1")
    assert f"STATUS=config invalid: {srv.config_path}: server.children: " \
        in ready[1]
    for _ in range(20):  # every connection, not only the first
        sock, line = connect(srv.port)
        sock.close()
        assert line.startswith(b"421 4.3.0 "), line
    assert srv.proc.poll() is None
    doc = json.loads(ctl(srv, "status", "--json").stdout)
    assert doc["supervisor"]["state"] == "config-invalid" and doc["pool"]["workers"] == 0
    assert doc["config_error"].startswith(f"{srv.config_path}: server.children: ")
    assert doc["config"] == str(srv.config_path)
    text = ctl(srv, "status")
    assert text.returncode == 0 and "CONFIG INVALID: " in text.stdout, text
    # Still wrong, differently: the reload says why, with exit 1.
    set_key(srv, "children", "4")
    set_key(srv, "idle_children", "9")
    out = ctl(srv, "reload")
    assert out.returncode == 1, out
    assert "server.idle_children: must not exceed server.children (9 > 4)" in out.stdout
    assert "still answering 421" in out.stdout
    set_key(srv, "idle_children", "2")
    fixed_at = time.monotonic()
    out = ctl(srv, "reload")
    assert out.returncode == 0, out
    assert out.stdout.startswith("config valid: serving again"), out.stdout
    sock, line = connect(srv.port)
    back = time.monotonic() - fixed_at
    sock.close()
    assert line.startswith(b"220 mx.test"), line
    print(f"\nconfig fixed -> 220 in {back:.3f}s")
    assert back < 2.0
    snap = srv.snapshot()
    assert snap["supervisor"]["pid"] == srv.pid and snap["supervisor"]["state"] == "running"
    assert "reload failed, still config invalid" in srv.log()


def test_term_while_config_invalid_stops_cleanly(serve):
    srv = serve(start=False, socket_activate=["smtp"])
    set_key(srv, "bogus_key", "1")
    srv.start()
    srv.activate().close()
    wait_for(lambda: srv.notify.first("READY=1"), 10, what="READY=1")
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(10) == 0
    assert not os.path.exists(srv.runtime_dir / "registry")
    assert srv.log().count("config invalid: ") == 1  # one journal line, not one per client


def test_refused_reload_exits_1_with_the_whole_reason(serve):
    srv = serve()
    generation = srv.snapshot()["supervisor"]["generation"]
    long_key = "k" * 60
    set_key(srv, long_key, "1")
    out = ctl(srv, "reload")
    assert out.returncode == 1, out
    whole = f"{srv.config_path}: server.{long_key}: unknown key"
    assert whole in out.stdout  # not cut at the registry header's 40 bytes
    assert f"generation {generation} keeps serving" in out.stdout
    text = ctl(srv, "status").stdout
    assert f"last reload FAILED: {whole}" in text
    doc = json.loads(ctl(srv, "status", "--json").stdout)
    assert doc["supervisor"]["reload"]["reason"] == whole
    sock, line = connect(srv.port)  # the old generation serves
    sock.close()
    assert line.startswith(b"220")


def test_qsmtpctl_works_with_a_broken_file(serve):
    srv = serve()
    set_key(srv, "children", "oops")  # invalid TOML
    for args in (["status"], ["status", "--json"], ["status", "--format", "prometheus"]):
        out = ctl(srv, *args)
        assert out.returncode == 0, out
        assert out.stderr.startswith(f"qsmtpctl: warning: {srv.config_path}: -: invalid TOML")
    assert "qsmtp_up 1" in ctl(srv, "status", "--format", "prometheus").stdout
    shown = ctl(srv, "config", "show")
    assert shown.returncode == 78 and "invalid TOML" in shown.stderr
    assert f'runtime_dir = "{srv.runtime_dir}"  # file' in shown.stdout
    assert "children = 15" in shown.stdout and "# default" in shown.stdout
    out = ctl(srv, "stop")
    assert out.returncode == 0 and out.stdout.startswith(f"stopped (pid {srv.pid})"), out
    down = ctl(srv, "status", "--format", "prometheus")
    assert down.returncode == 1 and down.stdout.splitlines()[-1] == "qsmtp_up 0"


def test_ttou_retires_one_idle_worker_at_once_ttin_starts_one(serve):
    srv = serve(children=8, idle_children=4)
    wait_for(lambda: len(srv.workers()) == 4, 5, what="4 workers")
    assert f"config {srv.config_path};" in srv.log()  # the start-up line names the file
    t0 = time.monotonic()
    srv.signal(signal.SIGTTOU)
    wait_for(lambda: len(srv.workers()) == 3, 2, what="3 workers after TTOU")
    print(f"\nTTOU -> one worker fewer in {time.monotonic() - t0:.3f}s")
    t0 = time.monotonic()
    srv.signal(signal.SIGTTIN)
    wait_for(lambda: len(srv.workers()) == 4, 2, what="4 workers after TTIN")
    print(f"TTIN -> one worker more in {time.monotonic() - t0:.3f}s")
    assert srv.snapshot()["pool"]["idle_children"] == 4


def test_stopping_standalone_server_refuses_new_clients_at_once(serve):
    srv = serve(children=4, idle_children=2, grace=10)
    busy, line = connect(srv.port)
    assert line.startswith(b"220")
    busy.sendall(b"EHLO a.test\r\nMAIL FROM:<a@example.test>\r\n")
    time.sleep(0.3)
    srv.signal(signal.SIGTERM)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False
    t0 = time.monotonic()
    wait_for(refused, 1.0, what="port closed after TERM")
    print(f"\nTERM -> new connections refused in {time.monotonic() - t0:.3f}s")
    assert srv.proc.poll() is None  # the busy session still has its grace
    busy.sendall(b"QUIT\r\n")
    busy.close()
    assert srv.proc.wait(15) == 0
