"""The limit plugin on one host with the default SQLite store: a real
`qsmtp serve`, its workers sharing `<state_dir>/limit.sqlite`."""

from __future__ import annotations

import time

from helpers.server import connect, wait_for
from qsmtp import config as qconfig
from qsmtp.state.clientlimits import cluster_view


def test_concurrency_across_the_workers_of_one_host(serve, tmp_path):
    srv = serve(children=6, idle_children=4, max_from_ip=10, state_dir=str(tmp_path / "st"),
                extra_toml='[[plugins]]\nname = "limit"\nconcurrency = 2\n')
    held = [connect(srv.port) for _ in range(4)]
    lines = [line for _, line in held]
    assert sum(line.startswith(b"220") for line in lines) == 2, lines
    assert sum(line.startswith(b"421 4.7.0") for line in lines) == 2, lines
    for sock, _ in held:
        sock.close()
    config = qconfig.load(str(srv.config_path))
    wait_for(lambda: cluster_view(config, ["127.0.0.1"], time.time())["127.0.0.1"]["sessions"] == 0
             or None, 10, what="places given back")
    again = [connect(srv.port) for _ in range(2)]
    assert all(line.startswith(b"220") for _, line in again)
    for sock, _ in again:
        sock.close()
