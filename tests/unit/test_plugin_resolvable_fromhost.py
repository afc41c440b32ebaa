"""resolvable_fromhost against the loopback DNS server."""

from __future__ import annotations

import pytest

from helpers.dns_server import DnsServer
from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.resolvable_fromhost import ResolvableFromhost

CONFIG = qconfig.load(None, {})
ZONE = """
$TTL 60
@            SOA ns.test. host.test. 1 60 60 60 60
mx.test.     MX 10 mail.mx.test.
mail.mx.test. A 192.0.2.25
amx.test.    A 192.0.2.26
v6.test.     AAAA 2001:db8::25
loop.test.   MX 10 lo.loop.test.
lo.loop.test. A 127.0.0.1
nullmx.test. MX 0 .
dangling.test. MX 10 nowhere.test.
txtonly.test. TXT "hello"
backup.test. MX 10 broken.test.
backup.test. MX 20 mail.mx.test.
xn--wei-7ka.test. MX 10 mail.mx.test.
kiwi.test.   MX 10 mail.mx.test.
"""


@pytest.fixture(scope="module")
def dns():
    server = DnsServer.from_zone_text(ZONE, "test.", servfail=["broken.test", "down.test"])
    with server:
        yield server


def mail(dns, sender, **opts):
    p = ResolvableFromhost(CONFIG, "resolvable_fromhost", {**dns.options(), **opts})
    sess = make_session(CONFIG, sender=sender)
    return p.hook_mail(sess, sess.transaction.sender, {})


@pytest.mark.parametrize("sender", ["a@mx.test", "a@amx.test", "a@v6.test", "a@backup.test",
                                    "", "a@[192.0.2.1]"])
def test_resolvable(dns, sender):
    assert mail(dns, sender) is None


@pytest.mark.parametrize("sender", ["a@loop.test", "a@dangling.test", "a@txtonly.test",
                                    "a@nx.test"])
def test_not_resolvable(dns, sender):
    result, message = mail(dns, sender)
    assert result is Result.DENY
    assert message == f"5.7.1 Sender domain {sender[2:]} does not resolve"


def test_null_mx(dns):
    result, message = mail(dns, "a@nullmx.test")
    assert result is Result.DENY and "null MX" in message


def test_temporary_failure(dns):
    assert mail(dns, "a@down.test")[0] is Result.DENYSOFT
    assert mail(dns, "a@down.test", temp_action="note") is Result.DECLINED


def test_invalid_networks_option(dns):
    assert mail(dns, "a@loop.test", invalid_networks=[]) is None
    with pytest.raises(PluginError):
        mail(dns, "a@mx.test", invalid_networks=["bogus"])


def test_idn_sender_domain_is_asked_as_its_a_label(dns):
    # weiß.test is xn--wei-7ka.test under IDNA 2008; IDNA 2003 asked weiss.test.
    assert mail(dns, "a@weiß.test") is None
    asked = {name for name, _, _ in dns.queries}
    assert "xn--wei-7ka.test" in asked and "weiss.test" not in asked


def test_look_alike_does_not_borrow_the_real_domains_dns(dns):
    # U+212A KELVIN SIGN: UTS #46 (dnspython's default with idna installed)
    # maps it to "k" and would ask kiwi.test; IDNA 2008 refuses the name.
    result = mail(dns, "a@\u212aiwi.test")
    assert result is not None and result[0] is Result.DENY
    assert "kiwi.test" not in {name for name, _, _ in dns.queries}
