"""helo: checks by policy level; DNS checks against the loopback DNS server."""

from __future__ import annotations

import pytest

from helpers.dns_server import DnsServer
from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.helo import Helo

CONFIG = qconfig.load(None, {"server.me": "mx.ours.test"})
RECORDS = {
    "mail.client.test": {"A": ["192.0.2.7"]},
    "elsewhere.test": {"A": ["198.51.100.1"]},
    "7.2.0.192.in-addr.arpa": {"PTR": ["mail.client.test."]},
    "8.2.0.192.in-addr.arpa": {"PTR": ["ptr-only.test."]},
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(RECORDS) as server:
        yield server


def helo(dns, name, ip="192.0.2.7", local="203.0.113.25", **opts):
    p = Helo(CONFIG, "helo", {**dns.options(), **opts})
    sess = make_session(CONFIG, ip=ip)
    sess.conn = type(sess.conn)(ip, 40000, local, 25)
    result = p.hook_ehlo(sess, name)
    return (sess.notes.get("helo_failed") if result else None), result


@pytest.mark.parametrize("name,failed", [
    ("mail.client.test", None),
    ("[192.0.2.7]", None),
    ("[192.0.2.8]", "is_forged_literal"),
    ("[not an ip]", "is_forged_literal"),
    ("192.0.2.7", "is_bare_ip"),
    ("localhost", "invalid_localhost"),
    ("[127.0.0.1]", "invalid_localhost"),
    ("mx.ours.test", "claims_us"),
    ("[203.0.113.25]", "claims_us"),
    ("spammer.example", "bad_helo"),
    ("friend", None),  # not a FQDN, but lenient doesn't care
])
def test_lenient(dns, name, failed):
    assert helo(dns, name, bad_helo=["Spammer.Example"])[0] == failed


@pytest.mark.parametrize("name,ip,failed", [
    ("mail.client.test", "192.0.2.7", None),
    ("friend", "192.0.2.7", "is_not_fqdn"),
    ("bad_label.test", "192.0.2.7", "is_not_fqdn"),
    ("nx.client.test", "192.0.2.7", "no_forward_dns"),
    ("elsewhere.test", "192.0.2.99", "no_reverse_dns"),
    ("elsewhere.test", "192.0.2.8", None),  # rfc doesn't require a match
])
def test_rfc(dns, name, ip, failed):
    assert helo(dns, name, ip=ip, policy="rfc")[0] == failed


def test_strict_matching_dns(dns):
    assert helo(dns, "elsewhere.test", ip="192.0.2.8", policy="strict")[0] == "no_matching_dns"
    assert helo(dns, "mail.client.test", policy="strict")[0] is None


def test_localhost_from_loopback_and_skip(dns):
    assert helo(dns, "localhost", ip="127.0.0.1")[0] is None
    assert helo(dns, "friend", policy="rfc", skip=["is_not_fqdn", "no_forward_dns"])[0] is None


def test_action_and_message(dns):
    _, result = helo(dns, "192.0.2.7", action="denysoft")
    assert result == (Result.DENYSOFT, "4.7.1 Invalid HELO/EHLO 192.0.2.7: is bare ip")


def test_bad_options(dns):
    for opts in ({"policy": "paranoid"}, {"skip": ["no_such_check"]},
                 {"bad_helo_patterns": ["("]}):
        with pytest.raises(PluginError):
            Helo(CONFIG, "helo", {**dns.options(), **opts})


@pytest.mark.parametrize("bad, name", [
    ("straße.test", "xn--strae-oqa.test"),  # U-label listed, A-label sent
    ("xn--strae-oqa.test", "STRAßE.test"),  # and the other way round
])
def test_bad_helo_matches_both_forms(dns, bad, name):
    assert helo(dns, name, bad_helo=[bad])[0] == "bad_helo"


def test_bad_helo_is_no_look_alike(dns):
    assert helo(dns, "strasse.test", bad_helo=["straße.test"])[0] is None


def test_claims_us_in_the_other_form(dns):
    cfg = qconfig.load(None, {"server.me": "mx.bücher.test"})
    p = Helo(cfg, "helo", dns.options())
    sess = make_session(cfg, ip="192.0.2.7")
    assert p.hook_ehlo(sess, "MX.xn--bcher-kva.test") is not None
    assert sess.notes["helo_failed"] == "claims_us"


@pytest.mark.parametrize("name, failed", [
    ("\u212aiwi.test", "is_not_fqdn"),  # KELVIN SIGN: not a domain under IDNA 2008
    ("xn--zz.test", "is_not_fqdn"),  # fake A-label
])
def test_idna2008_names_under_rfc(dns, name, failed):
    assert helo(dns, name, policy="rfc", skip=["no_forward_dns", "no_reverse_dns"])[0] == failed


def test_bad_helo_entry_outside_idna2008_is_a_load_error(dns):
    with pytest.raises(PluginError, match="bad_helo"):
        Helo(CONFIG, "helo", {"bad_helo": ["\u212aiwi.test"], **dns.options()})
