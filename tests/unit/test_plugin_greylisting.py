"""greylisting: black/grey/white timeouts, keys, whitelists, deny_late."""

from __future__ import annotations

import pytest

from helpers.fakes import addr, make_session
from helpers.forked import run_forked
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.greylisting import Greylisting

CONFIG = qconfig.load(None, {})
T0 = 1_000_000.0


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def grey(tmp_path):
    def make(**opts):
        p = Greylisting(CONFIG, "greylisting", {"db_path": str(tmp_path / "g.sqlite"),
                                                "black_timeout": 60, "grey_timeout": 600,
                                                "white_timeout": 3600, **opts})
        p.clock = Clock()
        return p
    return make


def rcpt(p, ip="192.0.2.7", sender="s@a.test", to="u@example.test", **attrs):
    sess = make_session(CONFIG, ip=ip, sender=sender, **attrs)
    return p.hook_rcpt(sess, addr(to), {})


def test_black_grey_white_cycle(grey):
    p = grey()
    first = rcpt(p)
    assert first[0] is Result.DENYSOFT and first[1].startswith("4.7.1 ")
    p.clock.now += 30
    assert rcpt(p) is not None  # still black
    p.clock.now += 40
    assert rcpt(p) is None  # retried after black_timeout: passes
    p.clock.now += 3000
    assert rcpt(p) is None  # white, and extended
    p.clock.now += 3000
    assert rcpt(p) is None
    p.clock.now += 3601
    assert rcpt(p) is not None  # white expired: new again


def test_grey_timeout_expires(grey):
    p = grey()
    rcpt(p)
    p.clock.now += 601
    assert rcpt(p) is not None  # too late a retry: starts over


def test_key_parts(grey):
    p = grey()
    rcpt(p)
    p.clock.now += 61
    assert rcpt(p, to="other@example.test") is not None
    assert rcpt(p, sender="t@a.test") is not None
    assert rcpt(p, ip="192.0.2.8") is not None
    q = grey(sender=False, recipient=False, ipv4_prefix=24)
    q.clock.now = p.clock.now + 1000
    rcpt(q, ip="198.51.100.1")
    q.clock.now += 61
    assert rcpt(q, ip="198.51.100.99", sender="x@y.test", to="z@example.test") is None


def test_exemptions(grey):
    p = grey(whitelist_ips=["192.0.2.0/24"], whitelist_senders=["@good.test"],
             whitelist_rcpts=["abuse@example.test"])
    assert rcpt(p) is None
    assert rcpt(p, ip="203.0.113.1", sender="x@good.test") is None
    assert rcpt(p, ip="203.0.113.1", to="abuse@example.test") is None
    assert rcpt(p, ip="203.0.113.1", relay_client=True) is None
    assert rcpt(p, ip="203.0.113.1", notes={"whitelisthost": "karma"}) is None
    assert rcpt(p, ip="203.0.113.1") is not None


def test_whitelists_compare_domains_as_a_labels(grey):
    p = grey(whitelist_senders=["@kiwi.test", "@straße.test"],
             whitelist_rcpts=["abuse@xn--bcher-kva.test"])
    assert rcpt(p, ip="203.0.113.1", sender="x@xn--strae-oqa.test") is None
    assert rcpt(p, ip="203.0.113.1", to="abuse@bücher.test") is None
    # U+212A KELVIN SIGN folds to "k" under str.lower(): no whitelist bypass.
    assert rcpt(p, ip="203.0.113.2", sender="x@\u212aiwi.test") is not None


def test_modes_and_deny_late(grey):
    assert rcpt(grey(mode="testonly")) is None
    assert rcpt(grey(mode="off", db_path="/nonexistent/dir/x.sqlite")) is None
    p = grey(deny_late=True)
    sess = make_session(CONFIG, ip="203.0.113.9")
    assert p.hook_rcpt(sess, addr("u@example.test"), {}) is None
    assert p.hook_data(sess)[0] is Result.DENYSOFT


def test_unavailable_db_passes(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    p = Greylisting(CONFIG, "greylisting", {"db_path": str(blocker / "g.sqlite")})
    assert rcpt(p) is None


@pytest.mark.parametrize("opts", [{"black_timeout": 700, "grey_timeout": 600},
                                  {"ipv4_prefix": 4}, {"white_timeout": 0},
                                  {"remote_ip": False, "sender": False, "recipient": False},
                                  {"whitelist_ips": ["x"]}, {"mode": "strict"}])
def test_bad_options(opts):
    with pytest.raises(PluginError):
        Greylisting(CONFIG, "greylisting", opts)


# -- concurrent workers: real processes on one database file ----------------
def _hammer(plugin, rounds, ip):
    """One forked worker: the plugin object crossed fork() (like the
    supervisor's), so its SQLite connection must be opened here."""
    refused = errors = 0
    for _ in range(rounds):
        try:
            if rcpt(plugin, ip=ip) is not None:
                refused += 1
        except Exception:  # noqa: BLE001 - counted, the test fails on it
            errors += 1
    return refused, errors


WORKERS, ROUNDS = 8, 40


def _row(p, ip):
    sess = make_session(CONFIG, ip=ip)
    key = p.key(sess, addr("u@example.test"))
    return p.store.counts(key)


def test_concurrent_passes_lose_no_update(grey):
    p = grey()
    p.clock = lambda: T0  # plain function: survives fork
    ip = "198.51.100.50"
    rcpt(p, ip=ip)  # parent opens the db before forking, like a busy supervisor
    p.clock = lambda: T0 + 61
    assert rcpt(p, ip=ip) is None  # white now: passes = 1
    results = run_forked(_hammer, (p, ROUNDS, ip), WORKERS)
    assert results == [(0, 0)] * WORKERS  # nothing refused, nothing raised
    assert _row(p, ip) == (1 + WORKERS * ROUNDS, 1)


def test_concurrent_new_triplet_counts_every_refusal(grey):
    p = grey()
    p.clock = lambda: T0
    ip = "198.51.100.51"
    results = run_forked(_hammer, (p, ROUNDS, ip), WORKERS)
    assert results == [(ROUNDS, 0)] * WORKERS  # all refused (black), none raised
    assert _row(p, ip) == (0, WORKERS * ROUNDS)
