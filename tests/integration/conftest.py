"""Shared fixtures for tests that run real `qsmtp serve` daemons.

    def test_x(serve):
        srv = serve(children=4, idle_children=2)      # started, running
        srv = serve(start=False, flags=["--debug"])   # configure first

Every daemon is stopped by PID at the end of the test, its workers are
checked gone, and its SysV registry objects must no longer exist (a leak
fails the test: a clean stop leaves nothing behind, `ipcs` stays empty).
"""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from helpers.server import Server, alive, wait_for  # noqa: E402


@pytest.fixture
def serve(tmp_path):
    servers: list[Server] = []

    def make(*, start: bool = True, name: str | None = None, **kwargs) -> Server:
        srv = Server(tmp_path / (name or f"s{len(servers)}"), **kwargs)
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
                     5, what="workers gone")
        except AssertionError as exc:
            problems.append(str(exc))
        finally:
            srv.cleanup()
        leaked = srv.leaked_sysv()
        if leaked:
            problems.append(f"SysV objects left behind: {leaked}\n{srv.log()[-3000:]}")
    assert not problems, "\n".join(problems)
