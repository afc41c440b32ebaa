"""fcrdns against the loopback DNS server."""

from __future__ import annotations

import pytest

from helpers.dns_server import DnsServer
from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.fcrdns import Fcrdns

CONFIG = qconfig.load(None, {})
RECORDS = {
    "7.2.0.192.in-addr.arpa": {"PTR": ["other.test.", "mail.good.test."]},
    "mail.good.test": {"A": ["192.0.2.7"]},
    "other.test": {"A": ["198.51.100.1"]},
    "8.2.0.192.in-addr.arpa": {"PTR": ["liar.test."]},
    "liar.test": {"A": ["203.0.113.5"]},
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa":
        {"PTR": ["v6.good.test."]},
    "v6.good.test": {"AAAA": ["2001:db8::1"]},
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(RECORDS) as server:
        yield server


def run(dns, ip, **opts):
    p = Fcrdns(CONFIG, "fcrdns", {**dns.options(), **opts})
    sess = make_session(CONFIG, ip=ip)
    assert p.hook_connect(sess) is None
    return p.hook_mail(sess, sess.transaction.sender, {}), sess


def test_confirmed(dns):
    result, sess = run(dns, "192.0.2.7", action="deny")
    assert result is None
    assert sess.notes["fcrdns"] == "mail.good.test"
    assert sess.remote_host == "mail.good.test"
    assert run(dns, "2001:db8::1", action="deny")[1].notes["fcrdns"] == "v6.good.test"


def test_unconfirmed_and_missing(dns):
    result, sess = run(dns, "192.0.2.8")
    assert result is Result.DECLINED and sess.notes["fcrdns"] is None  # note only
    assert run(dns, "192.0.2.8", action="deny")[0][0] is Result.DENY
    assert run(dns, "192.0.2.8", action="deny", require="ptr")[0] is None
    result, sess = run(dns, "192.0.2.99", action="deny", require="ptr")
    assert result[0] is Result.DENY and sess.notes["reverse_dns"] == []


def test_dns_failure_never_refuses():
    with DnsServer({}, servfail=["9.2.0.192.in-addr.arpa"]) as broken:
        assert run(broken, "192.0.2.9", action="deny")[0] is None


def test_relay_clients_exempt(dns):
    p = Fcrdns(CONFIG, "fcrdns", {**dns.options(), "action": "deny"})
    sess = make_session(CONFIG, ip="192.0.2.8")
    p.hook_connect(sess)
    sess.relay_client = True
    assert p.hook_mail(sess, sess.transaction.sender, {}) is None


def test_bad_options(dns):
    with pytest.raises(PluginError):
        Fcrdns(CONFIG, "fcrdns", {**dns.options(), "max_names": 0})


def test_answers_are_cached_for_their_ttl_per_set_of_nameservers():
    """dns_cache: the second session's lookups are answered from the
    worker's cache while the TTL runs; 0 asks every time; another server
    (another set of nameservers) never sees the first one's answers."""
    with DnsServer(RECORDS, ttl=60) as cached, DnsServer(RECORDS, ttl=60) as other:
        run(cached, "192.0.2.7")
        asked = len(cached.queries)
        assert asked >= 2                       # PTR, then A of the name
        assert run(cached, "192.0.2.7")[1].notes["fcrdns"] == "mail.good.test"
        assert len(cached.queries) == asked     # all from the cache
        run(cached, "192.0.2.7", dns_cache=0)
        assert len(cached.queries) > asked
        assert run(other, "192.0.2.7")[1].notes["fcrdns"] == "mail.good.test"
        assert ("7.2.0.192.in-addr.arpa", "PTR", "udp") in other.queries
    with DnsServer(RECORDS, ttl=0) as fleeting:  # TTL 0: nothing to keep
        run(fleeting, "192.0.2.7")
        first = len(fleeting.queries)
        run(fleeting, "192.0.2.7")
        assert len(fleeting.queries) > first
