"""Privileges under --user nobody: a worker can write into the spool and the
runtime dir and nowhere else that is not world-writable (a test plugin
tries, in the worker); the registry is not writable by anyone but the
service user; `qsmtpctl status` works for the operator group (the service
user's group, here nogroup) and is refused with a clear line for others.
(tests/unit/test_ctl.py already checks the refusal wording against a
registry made by root; this is the live, dropped-privileges version.)"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import as_user
from reltools import TALLY, Raw, code

OTHER = as_user.setpriv("daemon", "daemon")
OPERATOR = as_user.setpriv("daemon", "daemon", groups="nogroup")
ATTACH = ("import sys, sysv_ipc\n"
          "try:\n"
          "    sysv_ipc.attach(int(sys.argv[1]), flags=int(sys.argv[2])).read(8)\n"
          "    print('attached')\n"
          "except sysv_ipc.PermissionsError:\n"
          "    print('denied')\n")


@pytest.fixture
def base():
    with as_user.shared_dir("qsmtp-priv-") as where:
        yield where


def run_as(prefix: list[str], *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=30,
                          env=as_user.env())


def test_worker_confined_registry_private(fleet, base):
    srv_dir = base / "s"
    forbidden = ["/etc", "/usr/local/lib", "/var/lib", "/root", "/", str(srv_dir),
                 str(Path(__file__).parent), os.path.dirname(os.path.dirname(
                     __import__("qsmtp").__file__))]
    allowed = [str(srv_dir / "maildir" / "tmp"), str(srv_dir / "run")]
    world = ["/tmp", "/dev/shm"]  # world-writable: only the unit's sandbox closes these
    targets = allowed + forbidden + world
    toml = ('\n[[plugins]]\nname = "reliability_plugins:Probe"\n'
            f'targets = "{":".join(targets)}"\n')
    srv = fleet(name=str(srv_dir), flags=["--user", "nobody"], children=3, idle_children=2,
                extra_toml=toml)
    with Raw(srv.port) as client:
        assert code(client.reply()) == 220
        reply = client.cmd("EHLO probe.test").decode()
    words = dict(w.split("=") for w in reply.split("probe ", 1)[1].split())
    results = {path: words[str(i)] for i, path in enumerate(targets)}
    for path in allowed:
        assert results[path] == "ok", (path, results)
    for path in forbidden:
        assert results[path] in (str(errno.EACCES), str(errno.EPERM), str(errno.EROFS)), (
            path, results)
    TALLY.add("privileges.write_attempts_refused", len(forbidden))
    TALLY.note("privileges_world_writable", {p: results[p] for p in world})

    # the registry: owned by nobody, mode 0640 (operator group reads, nobody else)
    published = json.loads((srv.runtime_dir / "registry").read_text())
    assert (srv.runtime_dir / "registry").stat().st_mode & 0o022 == 0
    shm_id = published["shm_id"]
    for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == str(shm_id):
            mode, uid = int(fields[2]) & 0o777, int(fields[7])
            assert mode & 0o026 == 0 and uid == 65534, (oct(mode), uid)
    ro, rw = "4096", "0"  # SHM_RDONLY, writable
    assert run_as(OTHER, *as_user.python(), "-c", ATTACH, str(shm_id), ro).stdout.strip() \
        == "denied"
    assert run_as(OPERATOR, *as_user.python(), "-c", ATTACH, str(shm_id), rw).stdout.strip() \
        == "denied"
    assert run_as(OPERATOR, *as_user.python(), "-c", ATTACH, str(shm_id), ro).stdout.strip() \
        == "attached"

    # qsmtpctl: the operator group reads it, others get one clear line, exit 2
    ok = run_as(OPERATOR, *as_user.qsmtpctl(), "status", "--json",
                "--config", str(srv.config_path))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["supervisor"]["pid"] == srv.pid
    refused = run_as(OTHER, *as_user.qsmtpctl(), "status", "--config", str(srv.config_path))
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.strip().endswith("permission denied (join group nogroup)"), \
        refused.stderr
    assert "Traceback" not in refused.stderr
