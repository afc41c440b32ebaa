"""Shared fixtures for tests that run real `qsmtp serve` daemons.

    def test_x(serve):
        srv = serve(children=4, idle_children=2)      # started, running
        srv = serve(start=False, flags=["--debug"])   # configure first

Every daemon is stopped by PID at the end of the test, its workers are
checked gone, and its SysV registry objects must no longer exist (a leak
fails the test: a clean stop leaves nothing behind, `ipcs` stays empty).
"""

from __future__ import annotations

import pytest

from helpers.server import ServerPool


@pytest.fixture
def serve(tmp_path):
    pool = ServerPool(tmp_path, gone_within=5)
    yield pool.make
    problems = pool.close()
    assert not problems, "\n".join(problems)
