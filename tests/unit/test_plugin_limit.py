"""limit: concurrency, connection and recipient rates per client IP, on
both state backends (real SQLite file, real private redis-server)."""

from __future__ import annotations

import pytest

from helpers.fakes import addr, make_session
from helpers.forked import run_forked
from helpers.redis import RedisServer
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.limit import Limit, parse_rate
from qsmtp.state import redis as redis_backend
from qsmtp.state.clientlimits import cluster_view

T0 = 1_000_000.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def config(request, tmp_path):
    state = {"backend": request.param}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        redis_backend.Connection(server.url).run(lambda c: c.flushdb())
        state["url"] = server.url
    return qconfig.load(None, {"server.state_dir": str(tmp_path),
                               **{f"state.{k}": v for k, v in state.items()}})


def make(config, **opts):
    plugin = Limit(config, "limit", opts)
    plugin.clock = lambda: T0
    return plugin


def connect(plugin, ip="192.0.2.7"):
    session = make_session(plugin.config, ip=ip)
    return plugin.hook_connect(session), session


def test_concurrency_refuses_then_frees_on_disconnect(config):
    p = make(config, concurrency=2)
    (r1, s1), (r2, _) = connect(p), connect(p)
    assert r1 is None and r2 is None
    refused, s3 = connect(p)
    assert refused[0] is Result.DENYSOFT_DISCONNECT and refused[1].startswith("4.7.0 ")
    assert connect(p, ip="192.0.2.8")[0] is None  # per client IP
    p.hook_disconnect(s3)  # a refused session gives back nothing it didn't hold
    p.hook_disconnect(s1)
    assert connect(p)[0] is None
    assert cluster_view(config, ["192.0.2.7"], T0)["192.0.2.7"]["sessions"] == 2


def test_dead_sessions_expire_after_the_lease(config):
    p = make(config, concurrency=1, lease=60)
    connect(p)  # never disconnects: its worker died
    assert connect(p)[0] is not None
    p.clock = lambda: T0 + 61
    assert connect(p)[0] is None


def test_live_sessions_are_renewed(config):
    p = make(config, concurrency=1, lease=60)
    _, held = connect(p)
    p.clock = lambda: T0 + 50
    p.hook_mail(held, addr("s@a.test"), {})  # a command: renewed to T0 + 110
    p.clock = lambda: T0 + 100
    assert connect(p)[0] is not None


def test_connection_rate_slides(config):
    p = make(config, connection_rate="3/60s")
    results = [connect(p)[0] for _ in range(4)]
    assert results[:3] == [None] * 3
    assert results[3][0] is Result.DENYSOFT_DISCONNECT and results[3][1].startswith("4.7.0")
    p.clock = lambda: T0 + 59
    assert connect(p)[0] is not None  # refused ones did not count, accepted still do
    p.clock = lambda: T0 + 60
    assert connect(p)[0] is None


def test_rate_refusal_gives_the_session_place_back(config):
    p = make(config, concurrency=5, connection_rate="1/1m")
    connect(p)
    assert connect(p)[0] is not None
    assert cluster_view(config, ["192.0.2.7"], T0)["192.0.2.7"] == {
        "sessions": 1, "connections": 1, "recipients": 0}


def test_recipient_rate(config):
    p = make(config, recipient_rate="2/1h")
    _, session = connect(p)
    replies = [p.hook_rcpt(session, addr(f"u{i}@example.test"), {}) for i in range(3)]
    assert replies[:2] == [None, None]
    assert replies[2][0] is Result.DENYSOFT and replies[2][1].startswith("4.7.1 ")
    p.clock = lambda: T0 + 3600
    assert p.hook_rcpt(session, addr("u@example.test"), {}) is None


def test_whitelisted_ips_are_not_limited(config):
    p = make(config, concurrency=1, recipient_rate="1/1h", whitelist_ips=["192.0.2.0/24"])
    assert [connect(p)[0] for _ in range(3)] == [None] * 3
    _, session = connect(p)
    assert [p.hook_rcpt(session, addr("u@example.test"), {}) for _ in range(3)] == [None] * 3


def _hold(plugin, attempts: int) -> int:
    return sum(connect(plugin)[0] is None for _ in range(attempts))


def test_forked_workers_get_exactly_the_concurrency(config):
    p = make(config, concurrency=7)
    assert sum(run_forked(_hold, (p, 10), 6)) == 7


def test_unreachable_store_fails_open(tmp_path, caplog):
    nobody = RedisServer(tmp_path)  # never started
    config = qconfig.load(None, {"server.state_dir": str(tmp_path), "state.backend": "redis",
                                 "state.url": nobody.url})
    p = make(config, concurrency=1, connection_rate="1/1m", recipient_rate="1/1m")
    (r1, s1), (r2, _) = connect(p), connect(p)
    assert r1 is None and r2 is None
    assert p.hook_rcpt(s1, addr("u@example.test"), {}) is None
    assert p.hook_disconnect(s1) is None
    assert "limit store unavailable" in caplog.text


@pytest.mark.parametrize("text,expected", [("30/60s", (30, 60)), ("5/2m", (5, 120)),
                                           (" 100 / 1h ", (100, 3600)), ("1/1d", (1, 86400)),
                                           ("7/9", (7, 9)), ("", None)])
def test_parse_rate(text, expected):
    assert parse_rate("limit", "x", text) == expected


@pytest.mark.parametrize("opts", [{"connection_rate": "30"}, {"recipient_rate": "0/60s"},
                                  {"connection_rate": "3/0s"}, {"concurrency": -1},
                                  {"lease": 0}, {"whitelist_ips": ["x"]},
                                  {"recipient_rate": "3/60y"}, {"concurrency": 100_001},
                                  {"connection_rate": "100001/1s"},
                                  {"connection_rate": "1/8d"}, {"lease": 86401}])
def test_bad_options(opts):
    with pytest.raises(PluginError):
        Limit(qconfig.load(None, {}), "limit", opts)
