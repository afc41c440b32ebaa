"""dnsbl and rhsbl against the loopback DNS server (tests/helpers/dns_server)."""

from __future__ import annotations

import pytest

from helpers.dns_server import DnsServer
from helpers.fakes import addr, make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.dnsbl import Dnsbl

CONFIG = qconfig.load(None, {})
RECORDS = {
    "7.2.0.192.bl.test": {"A": ["127.0.0.2"], "TXT": ["see https://bl.test/192.0.2.7"]},
    "8.2.0.192.bl.test": {"A": ["127.0.0.4"]},
    "9.2.0.192.bl.test": {"A": ["127.255.255.254"]},  # the list's error answer
    "8.2.0.192.soft.test": {"A": ["127.0.0.2"]},
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test":
        {"A": ["127.0.0.2"]},
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(RECORDS) as server:
        yield server


def plugin(dns, **opts):
    return Dnsbl(CONFIG, "dnsbl", {"zones": ["bl.test"], **dns.options(), **opts})


def connect_rcpt(p, ip, to="u@example.test", **attrs):
    sess = make_session(CONFIG, ip=ip, **attrs)
    return p.hook_connect(sess), p.hook_rcpt(sess, addr(to), {}), sess


def test_listed_refused_at_rcpt_with_txt(dns):
    at_connect, at_rcpt, sess = connect_rcpt(plugin(dns), "192.0.2.7")
    assert at_connect is None
    assert at_rcpt == (Result.DENY, "5.7.1 Your address 192.0.2.7 is listed in bl.test: "
                       "see https://bl.test/192.0.2.7")
    assert sess.notes["dnsbl"].answers == ["127.0.0.2"]


def test_unlisted_error_answers_and_exemptions(dns):
    p = plugin(dns)
    assert connect_rcpt(p, "192.0.2.1")[1] is None
    assert connect_rcpt(p, "192.0.2.9")[1] is None  # 127.255.255.x is not a listing
    assert connect_rcpt(p, "192.0.2.7", to="postmaster@example.test")[1] is None
    assert connect_rcpt(p, "192.0.2.7", to="Abuse@example.test")[1] is None
    assert connect_rcpt(p, "192.0.2.7", relay_client=True)[1] is None
    assert connect_rcpt(plugin(dns, allow=["192.0.2.0/28"]), "192.0.2.7")[1] is None


def test_ipv6_nibbles(dns):
    assert connect_rcpt(plugin(dns), "2001:db8::1")[1][0] is Result.DENY


def test_per_zone_actions_match_and_message(dns):
    zones = [{"zone": "bl.test", "match": ["127.0.0.2"]},
             {"zone": "soft.test", "action": "denysoft", "message": "soft {ip} {zone}{txt}"}]
    p = plugin(dns, zones=zones)
    assert connect_rcpt(p, "192.0.2.8")[1] == (Result.DENYSOFT,
                                               "4.7.1 soft 192.0.2.8 soft.test")


def test_stage_connect_and_naughty(dns):
    at_connect, _, _ = connect_rcpt(plugin(dns, stage="connect"), "192.0.2.7")
    assert at_connect[0] is Result.DENY
    at_connect, at_rcpt, sess = connect_rcpt(plugin(dns, action="naughty"), "192.0.2.7")
    assert at_connect is Result.DECLINED and at_rcpt is None
    assert "listed in bl.test" in sess.notes["naughty"]


def test_servfail_fails_open(dns):
    with DnsServer(RECORDS, servfail=["7.2.0.192.bl.test"]) as broken:
        assert connect_rcpt(plugin(broken), "192.0.2.7")[1] is None


@pytest.mark.parametrize("opts", [{"zones": []}, {"zones": [{"zone": "x", "action": "kill"}]},
                                  {"zones": [{"zone": "x", "match": ["nope"]}]},
                                  {"zones": [{"name": "x"}]}, {"nameservers": ["dns.test"]},
                                  {"message": "{bogus}"}, {"allow": ["x/99"]}])
def test_bad_options(dns, opts):
    with pytest.raises(PluginError):
        plugin(dns, **opts)
