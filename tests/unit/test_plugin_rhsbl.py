"""rhsbl against the loopback DNS server."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from helpers.dns_server import DnsServer  # noqa: E402
from helpers.fakes import make_session  # noqa: E402

from qsmtp import config as qconfig  # noqa: E402
from qsmtp.plugins.api import PluginError, Result  # noqa: E402
from qsmtp.plugins.builtin.rhsbl import Rhsbl  # noqa: E402

CONFIG = qconfig.load(None, {})
RECORDS = {
    "spam.test.rhs.test": {"A": ["127.0.0.2"], "TXT": ["spam domain"]},
    "bad-helo.test.rhs.test": {"A": ["127.0.0.2"]},
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
