"""The state stores (qsmtp/state): the same contract on both backends - a
real SQLite file and a real private redis-server - and no lost update when
forked workers hammer one key."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from helpers.forked import run_forked
from helpers.redis import RedisServer
from qsmtp import state
from qsmtp.state import GreyRules, StateUnavailable
from qsmtp.state import redis as redis_backend

T0 = 1_000_000.0
RULES = GreyRules(black=60, grey=600, white=3600)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def make_config(tmp_path, backend: str, url: str = "") -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(backend=backend, url=url),
                           server=SimpleNamespace(state_dir=str(tmp_path)))


@pytest.fixture(params=["sqlite", "redis"])
def config(request, tmp_path):
    if request.param == "sqlite":
        return make_config(tmp_path, "sqlite")
    server = request.getfixturevalue("redis_server")
    conn = redis_backend.Connection(server.url)
    conn.run(lambda c: c.flushdb())
    return make_config(tmp_path, "redis", server.url)


def leases(config, feature="t"):
    return state.lease_store(config, str(os.path.join(config.server.state_dir, "l.sqlite")),
                             feature)


def test_leases_limit_expire_renew_release(config):
    store = leases(config)
    assert store.acquire("ip", "a", T0, T0 + 10, limit=2) == (True, 1)
    assert store.acquire("ip", "b", T0, T0 + 20, limit=2) == (True, 2)
    assert store.acquire("ip", "c", T0, T0 + 20, limit=2) == (False, 2)
    assert store.acquire("other", "c", T0, T0 + 20, limit=2) == (True, 1)  # per key
    assert store.count("ip", T0 + 10) == 1  # "a" expired at T0 + 10
    store.renew("ip", "b", T0 + 10, T0 + 100)
    assert store.count("ip", T0 + 50) == 1
    store.renew("ip", "gone", T0 + 10, T0 + 100)  # renewing no member adds none
    assert store.count("ip", T0 + 50) == 1
    store.release("ip", "b")
    assert store.count("ip", T0 + 50) == 0
    assert store.acquire("ip", "d", T0 + 50, T0 + 60) == (True, 1)  # limit 0: no limit


def test_leases_features_do_not_mix(config):
    leases(config, "one").acquire("ip", "a", T0, T0 + 10)
    assert leases(config, "two").count("ip", T0) == 0


def test_grey_state_machine(config):
    store = state.grey_store(config, os.path.join(config.server.state_dir, "g.sqlite"))
    assert store.check("k", T0, RULES) is False and store.counts("k") == (0, 1)
    assert store.check("k", T0 + 30, RULES) is False  # black
    assert store.check("k", T0 + 61, RULES) is True
    assert store.check("k", T0 + 3000, RULES) is True  # white, extended
    assert store.counts("k") == (2, 2)
    assert store.check("k", T0 + 3000 + 3601, RULES) is False  # white expired
    assert store.check("late", T0, RULES) is False
    assert store.check("late", T0 + 601, RULES) is False  # retry after grey: anew
    assert store.counts("late") == (0, 1)
    assert store.counts("unknown") is None


def test_karma_record(config):
    store = state.karma_store(config, os.path.join(config.server.state_dir, "k.sqlite"))
    assert store.get("192.0.2.1") is None
    store.add("192.0.2.1", False, True, T0, keep=3600)
    store.add("192.0.2.1", False, True, T0 + 1, keep=3600)
    assert store.get("192.0.2.1") == (0, 2, None)
    store.add("192.0.2.1", True, False, T0 + 2, keep=3600)
    store.add("192.0.2.1", False, False, T0 + 3, keep=3600)  # keeps the penalty start
    assert store.get("192.0.2.1") == (1, 2, T0 + 2)


# -- no lost update: forked workers (the stores crossed fork, like the supervisor's)
def _acquire_many(store, rounds: int, limit: int) -> int:
    won = 0
    for _ in range(rounds):
        added, _ = store.acquire("hot", f"{os.getpid()}:{time.monotonic_ns()}", T0,
                                 T0 + 600, limit)
        won += added
    return won


def test_forked_workers_get_exactly_the_limit(config):
    store = leases(config)
    store.count("hot", T0)  # opened in the parent before fork
    won = run_forked(_acquire_many, (store, 30, 100), 6)
    assert sum(won) == 100 and store.count("hot", T0) == 100


def _grey_many(store, rounds: int) -> int:
    return sum(store.check("w", T0 + 61, RULES) for _ in range(rounds))


def test_forked_greylist_counts_every_pass(config):
    store = state.grey_store(config, os.path.join(config.server.state_dir, "g.sqlite"))
    store.check("w", T0, RULES)
    assert sum(run_forked(_grey_many, (store, 25), 6)) == 150
    assert store.counts("w") == (150, 1)


def _karma_many(store, rounds: int) -> int:
    for _ in range(rounds):
        store.add("198.51.100.7", False, True, T0, keep=3600)
    return rounds


def test_forked_karma_loses_no_update(config):
    store = state.karma_store(config, os.path.join(config.server.state_dir, "k.sqlite"))
    assert sum(run_forked(_karma_many, (store, 25), 6)) == 150
    assert store.get("198.51.100.7") == (0, 150, None)


# -- Redis specifics ---------------------------------------------------------------
def test_redis_keys_carry_ttls(redis_server, tmp_path):
    config = make_config(tmp_path, "redis", redis_server.url)
    now = time.time()
    leases(config, "ttl").acquire("ip", "a", now, now + 30)
    state.grey_store(config, "").check("g", now, RULES)
    state.karma_store(config, "").add("192.0.2.9", False, True, now, keep=7200)
    conn = redis_backend.Connection(redis_server.url)
    ttls = conn.run(lambda c: [c.ttl("qsmtp:ttl:ip"), c.ttl("qsmtp:grey:g"),
                               c.ttl("qsmtp:karma:192.0.2.9")])
    assert 29 <= ttls[0] <= 31 and 599 <= ttls[1] <= 601 and 7199 <= ttls[2] <= 7200


def test_redis_down_is_state_unavailable_fast(tmp_path):
    server = RedisServer(tmp_path)  # a free port nobody listens on
    conn = redis_backend.Connection(server.url.replace("/0", "/1"))
    store = redis_backend.RedisLeases(conn, "down")
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        store.acquire("ip", "a", T0, T0 + 1)
    assert time.monotonic() - started < 2 * redis_backend.TIMEOUT


def test_redis_client_is_made_again_after_fork(redis_server):
    conn = redis_backend.Connection(redis_server.url)
    first = conn.client()
    assert conn.client() is first
    conn._pid = os.getpid() + 1  # as if we were a forked child
    assert conn.client() is not first


def test_password_is_not_logged():
    assert redis_backend.where("redis://:s3cret@10.0.0.5:6380/2") == "redis://10.0.0.5:6380/2"


@pytest.mark.parametrize("key,value", [("state.backend", "memcached"),
                                       ("state.url", "http://10.0.0.5:6379")])
def test_bad_state_settings_are_refused(key, value):
    from qsmtp.config import ConfigError, load
    with pytest.raises(ConfigError, match=key):
        load(None, {key: value})


def test_redis_call_interrupted_mid_reply_starts_afresh(redis_server):
    conn = redis_backend.Connection(redis_server.url)
    first = conn.client()

    def interrupted(client):
        client.ping()
        raise KeyboardInterrupt  # as a hook's time budget would, mid-exchange

    with pytest.raises(KeyboardInterrupt):
        conn.run(interrupted)
    assert conn.client() is not first and conn.run(lambda c: c.ping()) is True


def test_hung_redis_costs_a_bounded_wait(tmp_path):
    import signal

    with RedisServer(tmp_path) as server:
        store = redis_backend.RedisLeases(redis_backend.Connection(server.url), "hung")
        assert store.count("ip", T0) == 0  # connected
        server.proc.send_signal(signal.SIGSTOP)  # hung, not gone: cleanup sends CONT
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            store.acquire("ip", "a", T0, T0 + 1)
        assert time.monotonic() - started < 2 * redis_backend.TIMEOUT + 0.5
        server.proc.send_signal(signal.SIGCONT)
        assert store.acquire("ip", "b", T0, T0 + 1)[0]  # recovers by itself
