"""qsmtpctl signals only a pid it can prove is this qsmtp's supervisor
(issue 12.1).  Under --user nobody the registry is nobody's to write: nobody
puts a root-owned victim's pid in the header; root's `qsmtpctl stop` and
`reload` must then signal nothing, say why and exit non-zero (before: the
victim was killed, "stopped" was printed and the server kept running)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import as_user
from helpers.server import alive, wait_for
from qsmtp.registry_layout import H_PID

QSMTPCTL = str(Path(sys.executable).with_name("qsmtpctl"))
WRITE_PID = ("import sys, struct, sysv_ipc\n"
             "shm = sysv_ipc.attach(int(sys.argv[1]))\n"
             "shm.write(struct.pack('<I', int(sys.argv[2])), int(sys.argv[3]))\n")


@pytest.fixture
def base():
    with as_user.shared_dir("qsmtp-proof-") as where:
        yield where


@pytest.fixture
def victim():
    proc = subprocess.Popen(["sleep", "120"])  # root's, not qsmtp's
    yield proc
    proc.kill()
    proc.wait()


def _forge(shm_id: int, pid: int) -> None:
    """As nobody, the service user: write `pid` as the supervisor's."""
    done = subprocess.run([*as_user.setpriv("nobody", "nogroup"), *as_user.python(), "-c",
                           WRITE_PID, str(shm_id), str(pid), str(H_PID)],
                          capture_output=True, text=True, timeout=30, env=as_user.env())
    assert done.returncode == 0, done.stderr


def _ctl(srv, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([QSMTPCTL, *args, "--config", str(srv.config_path)],
                          capture_output=True, text=True, timeout=60)


def test_forged_supervisor_pid_is_not_signalled(serve, base, victim):
    srv = serve(name=str(base / "s"), flags=["--user", "nobody"], children=2,
                idle_children=1)
    shm_id = json.loads((srv.runtime_dir / "registry").read_text())["shm_id"]
    _forge(shm_id, victim.pid)
    for command in ("stop", "reload"):
        result = _ctl(srv, command)
        assert result.returncode != 0, (command, result.stdout, result.stderr)
        assert result.stderr.startswith("refusing to signal: the registry names pid "
                                        f"{victim.pid}, but its segment was created by "
                                        f"pid {srv.pid}"), result.stderr
        assert "Traceback" not in result.stderr
        assert victim.poll() is None and alive(srv.pid)
    assert srv.snapshot()["supervisor"]["generation"] == 1  # never reloaded
    # The real supervisor's pid back in place: stop works.
    _forge(shm_id, srv.pid)
    result = _ctl(srv, "stop")
    assert result.returncode == 0 and result.stdout.startswith(f"stopped (pid {srv.pid})")
    wait_for(lambda: srv.proc.poll() is not None, 10, what="server stopped")
    assert victim.poll() is None


def test_a_reused_pid_without_the_segment_is_not_signalled(serve, base, monkeypatch):
    """A process that has the creator's pid (a reused pid: simulated by
    changing the creator pid the kernel reports) and qsmtp in its command
    line, but not the registry attached, is no supervisor."""
    from qsmtp.ctl import proof
    from qsmtp.registry import Registry

    srv = serve(name=str(base / "s"), children=2, idle_children=1)
    impostor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                 "qsmtp"])
    cmdline = Path(f"/proc/{impostor.pid}/cmdline")
    wait_for(lambda: b"qsmtp" in cmdline.read_bytes(), 5, what="impostor exec'd")
    try:
        with Registry.attach(str(srv.runtime_dir)) as registry:
            assert proof.verified_supervisor(registry, srv.pid) == srv.pid
            real_row = proof.sysvipc.row

            def reused(kind, shm_id):  # ... and the segment made a while before it
                row = real_row(kind, shm_id)
                return dict(row, cpid=str(impostor.pid), ctime=str(int(row["ctime"]) - 10))

            monkeypatch.setattr(proof.sysvipc, "row", reused)
            with pytest.raises(proof.NotProven, match="does not have the registry attached"):
                proof.verified_supervisor(registry, impostor.pid)

            # Root without CAP_SYS_PTRACE cannot read maps: the impostor is
            # younger than the segment, the real supervisor older.
            def no_ptrace(*args):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(proof, "_has_attached", no_ptrace)
            with pytest.raises(proof.NotProven, match="does not have the registry attached"):
                proof.verified_supervisor(registry, impostor.pid)
            monkeypatch.setattr(proof.sysvipc, "row", real_row)
            assert proof.verified_supervisor(registry, srv.pid) == srv.pid
    finally:
        impostor.kill()
        impostor.wait()
