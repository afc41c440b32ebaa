"""The newcomer's path: `make run` (scripts/run-dev.sh, after the bootstrap)
says "serving" only once the port answers, fails with one clear line and the
way out on a taken port, never rewrites the config of a dev server that is
running, and the commands it and the README print work as shown."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time

import pytest

from helpers.server import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_DEV = os.path.join(REPO, "scripts", "run-dev.sh")


def _start(run_dir, port: int) -> subprocess.Popen:
    # its own process group: Ctrl-C is a SIGINT to the whole group
    return subprocess.Popen(["bash", RUN_DEV, str(run_dir), str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _serving(proc: subprocess.Popen, port: int) -> list[str]:
    """stdout up to the banner; the port must already answer then."""
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"run-dev.sh ended: {proc.wait()} {proc.stderr.read()}"
        lines.append(line)
        if line.startswith("qsmtp: serving"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert sock.recv(512).startswith(b"220")
            return lines
    raise AssertionError(f"no 'serving' line: {lines}")


def _ctrl_c(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(40)


@pytest.fixture
def dev(tmp_path):
    procs = []

    def start(port: int):
        proc = _start(tmp_path / "run", port)
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        if proc.poll() is None:
            _ctrl_c(proc)


def test_serving_after_bind_and_the_printed_commands_work(dev, tmp_path):
    port = free_port()
    proc = dev(port)
    out = "".join(_serving(proc, port)) + "".join(proc.stdout.readline() for _ in range(5))
    exports = re.search(r"export (.*)\n", out).group(1)
    env = dict(os.environ)
    for assignment in shlex.split(exports.replace("$PATH", env["PATH"])):
        name, _, value = assignment.partition("=")
        env[name] = value
    status = subprocess.run(["qsmtpctl", "status"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 0, status.stderr
    assert "workers" in status.stdout
    sent = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--to", "you@localhost"],
                          capture_output=True, text=True, timeout=60)
    assert "<-  250 2.0.0 Ok: queued as " in sent.stdout, sent.stdout
    assert len(os.listdir(tmp_path / "run" / "maildir" / "new")) == 1
    assert _ctrl_c(proc) == 0


def test_a_running_dev_server_keeps_its_config(dev, tmp_path):
    port = free_port()
    first = dev(port)
    _serving(first, port)
    config = tmp_path / "run" / "qsmtp.toml"
    before = config.read_bytes(), config.stat().st_mtime_ns
    second = dev(free_port())
    assert second.wait(30) == 1
    assert "already runs from" in second.stderr.read()
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before
    assert "qsmtp: serving" not in second.stdout.read()


def test_a_taken_port_fails_in_one_clear_line(dev):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = dev(port)
        assert proc.wait(30) != 0
        err = proc.stderr.read()
    assert "serving" not in proc.stdout.read()
    assert f"cannot listen on 127.0.0.1:{port}" in err, err
    assert "make run PORT=" in err and "Traceback" not in err, err
