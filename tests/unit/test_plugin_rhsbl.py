"""rhsbl against the loopback DNS server."""

from __future__ import annotations

import pytest

from helpers.dns_server import DnsServer
from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.rhsbl import Rhsbl

CONFIG = qconfig.load(None, {})
RECORDS = {
    "spam.test.rhs.test": {"A": ["127.0.0.2"], "TXT": ["spam domain"]},
    "bad-helo.test.rhs.test": {"A": ["127.0.0.2"]},
    # weiß.test under IDNA 2008 is xn--wei-7ka.test; IDNA 2003 made it weiss.test.
    "xn--wei-7ka.test.rhs.test": {"A": ["127.0.0.2"], "TXT": ["the real one"]},
    "weiss.test.rhs.test": {"A": ["127.0.0.3"], "TXT": ["the IDNA 2003 look-alike"]},
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(RECORDS) as server:
        yield server


def mail(dns, sender, helo="client.test", **opts):
    p = Rhsbl(CONFIG, "rhsbl", {"zones": ["rhs.test"], **dns.options(), **opts})
    sess = make_session(CONFIG, sender=sender, helo_host=helo)
    return p.hook_mail(sess, sess.transaction.sender, {})


def test_sender_domain(dns):
    assert mail(dns, "x@Spam.Test") == (Result.DENY,
                                        "5.7.1 Sender domain spam.test is listed in "
                                        "rhs.test: spam domain")
    assert mail(dns, "x@ok.test") is None
    assert mail(dns, "") is None  # null sender


def test_helo_only_when_asked(dns):
    assert mail(dns, "x@ok.test", helo="bad-helo.test") is None
    result = mail(dns, "x@ok.test", helo="bad-helo.test", check_helo=True)
    assert result[0] is Result.DENY and "HELO name bad-helo.test" in result[1]


def test_allow_and_action(dns):
    assert mail(dns, "x@spam.test", allow=["spam.test"]) is None
    assert mail(dns, "x@spam.test", action="denysoft")[0] is Result.DENYSOFT


def test_needs_zones(dns):
    with pytest.raises(PluginError):
        Rhsbl(CONFIG, "rhsbl", dns.options())


def test_idn_sender_is_looked_up_as_its_a_label(dns):
    result = mail(dns, "x@weiß.test")
    assert result == (Result.DENY, "5.7.1 Sender domain xn--wei-7ka.test is listed in "
                                   "rhs.test: the real one")
    asked = {name for name, _, _ in dns.queries}
    assert "xn--wei-7ka.test.rhs.test" in asked
    assert "weiss.test.rhs.test" not in asked


@pytest.mark.parametrize("allow, sender", [
    ("weiß.test", "x@xn--wei-7ka.test"),  # U-label allowed, A-label sent
    ("xn--wei-7ka.test", "x@weiß.test"),  # and the other way round
    ("weiß.test", "x@mx.weiß.test"),  # subdomains too
])
def test_allow_matches_both_forms(dns, allow, sender):
    assert mail(dns, sender, allow=[allow]) is None


def test_bad_allow_entry_is_a_load_error(dns):
    with pytest.raises(PluginError, match="allow"):
        Rhsbl(CONFIG, "rhsbl", {"zones": ["rhs.test"], "allow": ["\u212aiwi.test"],
                                **dns.options()})
