"""The `cluster` fixture: three qsmtp hosts behind a private HAProxy, a
private Postfix behind them (tests/helpers/cluster.py).

    def test_x(cluster):
        c = cluster()                               # started, every host UP
        c = cluster(extra_toml='[state]\\n...', max_from_ip=5)

At the end: HAProxy, every host (by PID; workers gone, SysV objects
removed) and Postfix are stopped.
"""

from __future__ import annotations

import pytest

from helpers.cluster import Cluster
from helpers.postfix import PrivatePostfix, _require
from helpers.server import ServerPool


@pytest.fixture
def cluster(tmp_path):
    _require()
    pool = ServerPool(tmp_path, gone_within=15)
    made: list[Cluster] = []
    postfix = PrivatePostfix(["example.test"])

    def make(**kwargs) -> Cluster:
        if not postfix.started:
            postfix.start()
        made.append(Cluster(pool, tmp_path, postfix, **kwargs))
        return made[-1].start()
    try:
        yield make
    finally:
        for one in made:
            one.stop()
        problems = pool.close()
        postfix.stop()
    assert not problems, "\n".join(problems)
