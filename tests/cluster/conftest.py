"""The `cluster` fixture: three qsmtp hosts behind a private HAProxy, a
private Postfix behind them (tests/helpers/cluster.py).

    def test_x(cluster):
        c = cluster()                               # started, every host UP
        c = cluster(extra_toml='[state]\\n...', max_from_ip=5)

At the end: HAProxy, every host (by PID; workers gone, SysV objects
removed) and Postfix are stopped.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from helpers.cluster import Cluster  # noqa: E402
from helpers.postfix import PrivatePostfix, _require  # noqa: E402
from helpers.server import ServerPool  # noqa: E402


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
