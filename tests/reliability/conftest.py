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

import pytest

from helpers.server import ServerPool
from helpers.tls import make_cert
from reltools import HERE, TALLY, log_problems


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
    pool = ServerPool(tmp_path, gone_within=10)
    yield pool.make
    assert not (problems := pool.close(log_check=_unexpected_log_lines)), "\n".join(problems)


def _unexpected_log_lines(srv) -> list[str]:
    bad = [line for line in log_problems(srv.log())
           if not any(allowed in line for allowed in srv.allow_log)]
    return ["server log:\n" + "\n".join(bad[:20])] if bad else []


@pytest.fixture(scope="session")
def tls_toml(tmp_path_factory):
    """A [tls] section with a fresh self-signed certificate (openssl)."""
    cert, key = make_cert(tmp_path_factory.mktemp("tls"))
    return f'\n[tls]\ncert = "{cert}"\nkey = "{key}"\n'
