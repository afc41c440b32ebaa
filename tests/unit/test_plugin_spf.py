"""spf against the loopback DNS server (tests/helpers/dns_server)."""

from __future__ import annotations

import time

import authres
import pytest

from helpers.dns_server import DnsServer
from helpers.fakes import addr, make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.spf import Spf
from qsmtp.smtp.address import Address

CONFIG = qconfig.load(None, {"server.me": "mx.ours.test"})
RECORDS = {
    "good.test": {"TXT": ["v=spf1 ip4:192.0.2.0/28 ip6:2001:db8::/32 include:inc.test -all"]},
    "inc.test": {"TXT": ["v=spf1 a:out.inc.test mx -all"], "MX": ["10 mx.inc.test."]},
    "out.inc.test": {"A": ["198.51.100.5"]},
    "mx.inc.test": {"A": ["198.51.100.25"]},
    "soft.test": {"TXT": ["v=spf1 ~all"]},
    "neutral.test": {"TXT": ["v=spf1 ?all"]},
    "broken.test": {"TXT": ["v=spf1 ip4:192.0.2.0/24 frobnicate -all"]},
    "helo.good.test": {"TXT": ["v=spf1 ip4:192.0.2.7 -all"]},
    "dead.test": {"A": ["192.0.2.250"]},  # exists, no SPF record
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(RECORDS) as server:
        yield server


def plugin(dns, **opts):
    return Spf(CONFIG, "spf", {**dns.options(), **opts})


def mail(p, sender, ip="192.0.2.7", helo="client.test", **attrs):
    sess = make_session(CONFIG, ip=ip, sender=sender, **attrs)
    sess.helo_host = helo
    txn = sess.transaction
    if not sender:
        txn.sender = Address(local="", domain=None, raw="<>")
    return p.hook_mail(sess, txn.sender, {}), sess


def test_pass_through_ip4_include_a_and_mx(dns):
    p = plugin(dns)
    for ip in ("192.0.2.7", "198.51.100.5", "198.51.100.25", "2001:db8::25"):
        result, sess = mail(p, "a@good.test", ip=ip)
        assert result is None, ip
        verdict = sess.transaction.notes["spf"]
        assert (verdict.result, verdict.domain, verdict.identity) == ("pass", "good.test",
                                                                      "mailfrom")
    asked = {(name, kind) for name, kind, _ in dns.queries}
    assert {("good.test", "TXT"), ("inc.test", "TXT"), ("out.inc.test", "A"),
            ("inc.test", "MX"), ("mx.inc.test", "A")} <= asked


def test_fail_is_refused_with_the_rfc7372_code(dns):
    result, sess = mail(plugin(dns), "a@good.test", ip="203.0.113.9")
    assert result == (Result.DENY, "5.7.23 SPF fail for good.test: SPF fail - not authorized")
    assert sess.transaction.notes["spf"].result == "fail"
    assert sess.notes["karma"] == -1


def test_default_policy_tolerates_softfail_neutral_none_permerror(dns):
    p = plugin(dns)
    for sender, expected in [("a@soft.test", "softfail"), ("a@neutral.test", "neutral"),
                             ("a@dead.test", "none"), ("a@broken.test", "permerror")]:
        result, sess = mail(p, sender, ip="203.0.113.9")
        assert result is Result.DECLINED, sender  # noted, not refused
        assert sess.transaction.notes["spf"].result == expected


def test_configurable_actions(dns):
    p = plugin(dns, softfail_action="denysoft", neutral_action="deny",
               permerror_action="deny", fail_action="naughty")
    assert mail(p, "a@soft.test", ip="203.0.113.9")[0][0] is Result.DENYSOFT
    assert mail(p, "a@soft.test", ip="203.0.113.9")[0][1].startswith("4.7.24 SPF softfail")
    assert mail(p, "a@neutral.test", ip="203.0.113.9")[0][0] is Result.DENY
    assert mail(p, "a@dead.test", ip="203.0.113.9")[0][0] is Result.DENY  # none = neutral
    assert mail(p, "a@broken.test", ip="203.0.113.9")[0][1].startswith("5.7.24 SPF permerror")
    result, sess = mail(p, "a@good.test", ip="203.0.113.9")
    assert result is Result.DECLINED and "SPF fail" in sess.notes["naughty"]


def test_temperror_on_servfail_and_silence(dns):
    with DnsServer(RECORDS, servfail=["soft.test"], drop=["good.test"]) as broken:
        p = plugin(broken, temperror_action="denysoft", dns_timeout=0.5)
        result, sess = mail(p, "a@soft.test")
        assert result[0] is Result.DENYSOFT and result[1].startswith("4.7.24 SPF temperror")
        result, sess = mail(p, "a@good.test")
        assert sess.transaction.notes["spf"].result == "temperror"
        result, sess = mail(plugin(broken, dns_timeout=0.5), "a@good.test")
        assert result is Result.DECLINED  # default: note only


def test_whole_evaluation_is_bounded_by_timeout(dns):
    # The include is never answered: without the overall budget the lookup
    # would wait dns_timeout (2 s); `timeout` caps it.
    records = {"slow.test": {"TXT": ["v=spf1 include:i1.test include:i2.test -all"]}}
    with DnsServer(records, drop=["i1.test", "i2.test"]) as slow:
        started = time.monotonic()
        result, sess = mail(plugin(slow, dns_timeout=2.0, timeout=0.3,
                                   temperror_action="denysoft"), "a@slow.test")
        elapsed = time.monotonic() - started
    assert sess.transaction.notes["spf"].result == "temperror"
    assert result[0] is Result.DENYSOFT
    assert elapsed < 0.9, elapsed


def test_null_sender_checks_the_helo_name(dns):
    p = plugin(dns)
    result, sess = mail(p, "", helo="helo.good.test")
    verdict = sess.transaction.notes["spf"]
    assert result is None and (verdict.result, verdict.identity, verdict.domain) == (
        "pass", "helo", "helo.good.test")
    result, _ = mail(p, "", ip="203.0.113.9", helo="helo.good.test")
    assert result[0] is Result.DENY


def test_relay_clients_authenticated_and_whitelisted_are_not_checked(dns):
    p = plugin(dns)
    for attrs in ({"relay_client": True}, {"auth_user": "alice"}):
        result, sess = mail(p, "a@good.test", ip="203.0.113.9", **attrs)
        assert result is None and "spf" not in sess.transaction.notes
    sess = make_session(CONFIG, ip="203.0.113.9", sender="a@good.test")
    sess.notes["whitelisthost"] = "karma"
    assert p.hook_mail(sess, addr("a@good.test"), {}) is None


def test_headers_received_spf_and_authentication_results(dns):
    p = plugin(dns)
    _, sess = mail(p, "a@good.test")
    assert p.hook_data_post(sess) is None
    added = sess.transaction.added_headers
    assert [h.split(":", 1)[0] for h in added] == ["Authentication-Results", "Received-SPF"]
    assert added[1].startswith("Received-SPF: Pass (mx.ours.test: domain of good.test "
                               "designates 192.0.2.7 as permitted sender)")
    parsed = authres.all_features().parse(" ".join(added[0].split()))
    assert parsed.authserv_id == "mx.ours.test"
    [clause] = parsed.results
    assert (clause.method, clause.result, clause.smtp_mailfrom) == ("spf", "pass", "good.test")


def test_header_choice_and_authserv_id(dns):
    p = plugin(dns, headers=["authentication-results"], authserv_id="auth.ours.test")
    _, sess = mail(p, "a@soft.test")
    p.hook_data_post(sess)
    assert sess.transaction.added_headers == [
        "Authentication-Results: auth.ours.test;\n\tspf=softfail smtp.mailfrom=soft.test"]
    p = plugin(dns, headers=[])
    _, sess = mail(p, "a@soft.test")
    p.hook_data_post(sess)
    assert sess.transaction.added_headers == []


def test_queries_go_only_to_the_configured_server(dns):
    with DnsServer(RECORDS) as other:
        mail(plugin(dns), "a@good.test")
        assert other.queries == []
        before = len(dns.queries)
        mail(plugin(other), "a@inc.test", ip="198.51.100.5")
        assert len(dns.queries) == before and other.queries


@pytest.mark.parametrize("opts", [{"fail_action": "explode"}, {"headers": ["x-spf"]},
                                  {"nameservers": ["resolver.test"]}, {"dns_port": 0},
                                  {"headers": "received-spf"}, {"bogus": 1},
                                  {"timeout": 0}])
def test_bad_options(dns, opts):
    with pytest.raises(PluginError):
        plugin(dns, **opts)
