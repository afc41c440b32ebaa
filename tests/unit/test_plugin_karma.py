"""karma: penalty box, good senders, records across connections (SQLite)."""

from __future__ import annotations

import os
import sqlite3

import pytest

from helpers.fakes import make_session
from helpers.forked import run_forked
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.karma import Karma

CONFIG = qconfig.load(None, {})


@pytest.fixture
def karma(tmp_path):
    p = Karma(CONFIG, "karma", {"db_path": str(tmp_path / "k" / "karma.sqlite"),
                                "positive": 2})
    p.clock = lambda: 1_000_000.0
    return p


def connection(p, score, ip="192.0.2.7"):
    sess = make_session(CONFIG, ip=ip)
    result = p.hook_connect(sess)
    sess.notes["karma"] = sess.notes.get("karma", 0) + score
    p.hook_disconnect(sess)
    return result, sess


def row(p, ip="192.0.2.7"):
    return p.lookup(ip)


def test_setup_opens_nothing(tmp_path):
    Karma(CONFIG, "karma", {"db_path": str(tmp_path / "x" / "k.sqlite")})
    assert not (tmp_path / "x").exists()  # lazily, in the worker


def test_naughty_goes_to_penalty_box_then_out(karma):
    assert connection(karma, -1)[0] is None
    result, sess = connection(karma, 0)
    assert result[0] is Result.DENYSOFT_DISCONNECT
    assert "24 more hours" in result[1]
    assert row(karma)[0] == 1  # refusing a boxed client doesn't extend the box
    karma.clock = lambda: 1_000_000.0 + 86400 + 1
    assert connection(karma, 0)[0] is None
    assert connection(karma, 0, ip="192.0.2.8")[0] is None  # per IP


def test_good_sender_is_trusted(karma):
    for _ in range(2):
        sess = make_session(CONFIG)
        karma.hook_connect(sess)
        karma.hook_queue_post(sess)
        karma.hook_disconnect(sess)
    _, sess = connection(karma, 0)
    assert sess.notes["karma_good"] and sess.notes["whitelisthost"] == "karma"
    assert sess.notes["karma_history"] == 2
    assert row(karma)[:2] == (0, 2)


def test_unavailable_db_fails_open(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = Karma(CONFIG, "karma", {"db_path": str(blocker / "karma.sqlite")})
    sess = make_session(CONFIG)
    assert p.hook_connect(sess) is None
    assert p.hook_disconnect(sess) is None


def test_locked_db_fails_open(karma, monkeypatch):
    connection(karma, 0)
    monkeypatch.setattr("qsmtp.state.sqlitedb.BUSY_MS", 10)
    karma.store.db.attempts = 2
    holder = sqlite3.connect(karma.store.db.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        karma.store.db._conn = None  # reopen with the short busy timeout
        karma.store.db.connection().execute("PRAGMA busy_timeout=10")
        assert connection(karma, 1)[0] is None  # no exception reaches the engine
    finally:
        holder.execute("ROLLBACK")


def test_reopens_after_fork(karma):
    connection(karma, 0)
    first = karma.store.db.connection()
    karma.store.db._pid = os.getpid() + 1  # as if we were a forked child
    assert karma.store.db.connection() is not first


@pytest.mark.parametrize("opts", [{"negative": 0}, {"penalty_days": 0}, {"action": "x"}])
def test_bad_options(opts):
    with pytest.raises(PluginError):
        Karma(CONFIG, "karma", opts)


# -- concurrent workers: real processes on one database file ----------------
def _worker(p, rounds, score):
    errors = refused = 0
    for _ in range(rounds):
        try:
            if connection(p, score, ip="198.51.100.7")[0] is not None:
                refused += 1
        except Exception:  # noqa: BLE001 - counted, the test fails on it
            errors += 1
    return refused, errors


def test_concurrent_workers_lose_no_update(karma):
    karma.clock = lambda: 1_000_000.0  # plain function: survives fork
    connection(karma, 0, ip="203.0.113.1")  # parent has the db open before fork
    workers, rounds = 8, 40
    results = run_forked(_worker, (karma, rounds, 1), workers)
    assert results == [(0, 0)] * workers
    rows = karma.store.db.read("SELECT naughty, nice, connects FROM karma WHERE ip = ?",
                         ("198.51.100.7",))
    assert rows == [(0, workers * rounds, workers * rounds)]
