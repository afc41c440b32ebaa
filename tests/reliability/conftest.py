"""Fixtures of the reliability tests (short form in `make test`, long form
with QSMTP_SOAK=1 under `make soak`).

    def test_x(fleet):
        srv = fleet(children=15, idle_children=5)   # a real `qsmtp serve`, running

Daemons get tests/reliability on PYTHONPATH, so test plugins load by
dotted path (`reliability_plugins:Hang`).  At the end every daemon is
stopped by PID, its workers must be gone, its SysV objects removed, and
its log must hold no traceback (unless the test said it expects one).
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from helpers.server import Server, alive, wait_for  # noqa: E402
from reltools import HERE, TALLY, log_problems  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _tally_report():
    yield TALLY
    TALLY.write()


@pytest.fixture
def tally():
    return TALLY


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{HERE}{os.pathsep}{path}" if path else str(HERE))
    servers: list[Server] = []

    def make(*, start: bool = True, name: str | None = None, base=None,
             allow_log: tuple[str, ...] = (), **kwargs) -> Server:
        srv = Server((base or tmp_path) / (name or f"s{len(servers)}"), **kwargs)
        srv.allow_log = allow_log
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    problems = []
    for srv in servers:
        try:
            srv.stop()
            wait_for(lambda: not any(alive(p) for p in srv.seen_pids if p != srv.pid),
                     10, what="workers gone")
        except AssertionError as exc:
            problems.append(str(exc))
        finally:
            srv.cleanup()
        leaked = srv.leaked_sysv()
        if leaked:
            problems.append(f"SysV objects left behind: {leaked}")
        bad = [line for line in log_problems(srv.log())
               if not any(allowed in line for allowed in srv.allow_log)]
        if bad:
            problems.append("server log:\n" + "\n".join(bad[:20]))
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def tls_toml(tmp_path_factory):
    """A [tls] section with a fresh self-signed certificate (openssl)."""
    import subprocess

    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=localhost", "-days", "2", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    os.chmod(where, 0o755)
    os.chmod(key, 0o644)  # the daemon may run as nobody in the privilege tests
    return f'\n[tls]\ncert = "{cert}"\nkey = "{key}"\n'
