"""dmarc: policy lookup against the loopback DNS server, alignment with the
spf/dkim verdicts (set directly here; the integration test produces them
for real), the organisational domain from Debian's Public Suffix List."""

from __future__ import annotations

import authres
import pytest

from helpers.dns_server import DnsServer
from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin._sender_auth import PSL_PATH, DkimVerdict, PublicSuffixList, SpfVerdict
from qsmtp.plugins.builtin.dmarc import Dmarc

CONFIG = qconfig.load(None, {"server.me": "mx.ours.test"})
RECORDS = {
    "_dmarc.example.test": {"TXT": ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@x.test"]},
    "_dmarc.strict.test": {"TXT": ["v=DMARC1; p=reject; aspf=s; adkim=s"]},
    "_dmarc.quiet.test": {"TXT": ["v=DMARC1; p=none"]},
    "_dmarc.q.test": {"TXT": ["v=DMARC1; p=quarantine"]},
    "_dmarc.sample.test": {"TXT": ["v=DMARC1; p=reject; pct=0"]},
    "_dmarc.two.test": {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]},
    "_dmarc.junk.test": {"TXT": ["v=DMARC1; p=bogus"]},
    "_dmarc.junkrua.test": {"TXT": ["v=DMARC1; p=bogus; rua=mailto:d@junkrua.test"]},
    "_dmarc.other.test": {"TXT": ["v=spf1 -all", "v=DMARC10; p=reject"]},
    "_dmarc.example.co.uk": {"TXT": ["v=DMARC1;p=reject"]},
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(RECORDS) as server:
        yield server


def plugin(dns, **opts):
    return Dmarc(CONFIG, "dmarc", {**dns.options(), **opts})


def run(p, from_line, spf=None, dkim=(), **attrs):
    message = f"From: {from_line}\nSubject: x\n\nbody\n".encode() if from_line else b"S: x\n\n"
    sess = make_session(CONFIG, message=message, **attrs)
    txn = sess.transaction
    if spf:
        txn.notes["spf"] = SpfVerdict("pass", spf, "mailfrom")
    txn.notes["dkim"] = [DkimVerdict("pass", d, "s1") for d in dkim]
    return p.hook_data_post(sess), txn


def test_org_domain_from_debians_public_suffix_list():
    psl = PublicSuffixList.load("dmarc", PSL_PATH)
    assert psl.org_domain("mail.example.co.uk") == "example.co.uk"
    assert psl.org_domain("a.b.Example.COM.") == "example.com"
    assert psl.org_domain("co.uk") == "co.uk"  # a public suffix is its own
    assert psl.org_domain("x.y.example.test") == "example.test"  # unlisted TLD: "*" rule
    assert psl.org_domain("a.b.c.ck") == "b.c.ck"  # wildcard *.ck
    assert psl.org_domain("x.www.ck") == "www.ck"  # exception !www.ck
    assert psl.org_domain("me.blogspot.com") == "me.blogspot.com"  # private section
    assert psl.aligned("bounce.example.com", "example.com", strict=False)
    assert not psl.aligned("bounce.example.com", "example.com", strict=True)
    assert not psl.aligned("a.co.uk", "b.co.uk", strict=False)


def test_spf_or_dkim_alignment_passes(dns):
    p = plugin(dns, reject_action="deny")
    for kwargs in ({"spf": "bounce.example.test"}, {"dkim": ["example.test"]},
                   {"spf": "other.test", "dkim": ["mail.example.test"]}):
        result, txn = run(p, "<a@example.test>", **kwargs)
        assert result is None, kwargs
        assert txn.notes["dmarc"].result == "pass"
    header = txn.added_headers[0]
    [clause] = authres.all_features().parse(" ".join(header.split())).results
    assert (clause.method, clause.result, clause.header_from, clause.policy) == (
        "dmarc", "pass", "example.test", "reject")


def test_unaligned_is_refused_by_p_reject(dns):
    result, txn = run(plugin(dns), "Bank <ceo@example.test>", spf="evil.test",
                      dkim=["evil.test"])
    assert result == (Result.DENY, "5.7.26 DMARC policy of example.test refuses this "
                      "message: not authenticated by SPF or DKIM")
    verdict = txn.notes["dmarc"]
    assert (verdict.result, verdict.policy, verdict.disposition) == ("fail", "reject", "reject")
    assert txn.added_headers == ["Authentication-Results: mx.ours.test;\n\tdmarc=fail "
                                 "(p=reject dis=reject) header.from=example.test "
                                 "policy.dmarc=reject"]


def test_strict_alignment(dns):
    p = plugin(dns)
    assert run(p, "a@strict.test", spf="bounce.strict.test")[0][0] is Result.DENY
    assert run(p, "a@strict.test", dkim=["sub.strict.test"])[0][0] is Result.DENY
    assert run(p, "a@strict.test", dkim=["strict.test"])[0] is None


def test_subdomain_uses_sp_of_the_organisational_domain(dns):
    result, txn = run(plugin(dns), "a@news.example.test", spf="evil.test")
    assert result is Result.DECLINED  # sp=quarantine -> quarantine_action note
    assert txn.notes["dmarc"].disposition == "quarantine"
    assert ("_dmarc.news.example.test", "TXT", "udp") in dns.queries
    result, _ = run(plugin(dns, quarantine_action="deny"), "a@news.example.test")
    assert result[0] is Result.DENY
    assert run(plugin(dns), "a@mail.example.co.uk")[0][0] is Result.DENY  # PSL: co.uk


def test_p_none_quarantine_and_pct(dns):
    p = plugin(dns)
    result, txn = run(p, "a@quiet.test")
    assert result is None and txn.notes["dmarc"].result == "fail"
    result, txn = run(p, "a@q.test")
    assert result is Result.DECLINED and txn.notes["dmarc"].disposition == "quarantine"
    result, txn = run(p, "a@sample.test")  # pct=0: reject softened to quarantine
    assert result is Result.DECLINED and txn.notes["dmarc"].disposition == "quarantine"
    result, _ = run(plugin(dns, honor_pct=False), "a@sample.test")
    assert result[0] is Result.DENY


def test_no_usable_policy_is_none(dns):
    p = plugin(dns)
    for domain in ("nopolicy.test", "two.test", "junk.test", "other.test"):
        result, txn = run(p, f"a@{domain}")
        assert result is None and txn.notes["dmarc"].result == "none", domain
    assert txn.added_headers == ["Authentication-Results: mx.ours.test;\n\t"
                                 "dmarc=none header.from=other.test"]
    result, txn = run(p, "a@junkrua.test")  # invalid p= but rua=: treated as p=none
    assert result is None and txn.notes["dmarc"].result == "fail"


def test_bad_from_and_temperror(dns):
    p = plugin(dns, bad_from_action="deny", temperror_action="denysoft")
    for line in (None, "a@example.test, b@example.test"):
        result, txn = run(p, line)
        assert result[0] is Result.DENY and txn.notes["dmarc"].result == "permerror"
    with DnsServer(RECORDS, servfail=["_dmarc.example.test"]) as broken:
        result, txn = run(plugin(broken, temperror_action="denysoft"), "a@example.test")
    assert result == (Result.DENYSOFT, "4.7.1 DMARC policy of example.test could not be "
                      "fetched")
    assert txn.notes["dmarc"].result == "temperror"


def test_our_own_senders_are_not_checked(dns):
    for attrs in ({"auth_user": "alice"}, {"relay_client": True}):
        result, txn = run(plugin(dns), "a@example.test", **attrs)
        assert result is None and "dmarc" not in txn.notes


def write_config(tmp_path, names):
    body = "".join(f'[[plugins]]\nname = "{n}"\n' for n in names)
    path = tmp_path / "q.toml"
    path.write_text(f'[queue]\npath = "{tmp_path}/md"\n{body}')
    return qconfig.load(str(path))


def test_must_come_after_spf_and_dkim(dns, tmp_path):
    with pytest.raises(PluginError, match="list spf before dmarc"):
        Dmarc(write_config(tmp_path, ["dmarc", "spf"]), "dmarc", dns.options())
    Dmarc(write_config(tmp_path, ["spf", "dkim", "dmarc"]), "dmarc", dns.options())


@pytest.mark.parametrize("opts", [{"psl_file": "/nonexistent/psl.dat"},
                                  {"reject_action": "bounce"}, {"honor_pct": "yes"},
                                  {"dns_timeout": 0}])
def test_bad_options(dns, opts):
    with pytest.raises(PluginError):
        plugin(dns, **opts)


def test_internationalised_from_domain_is_looked_up_as_a_labels(dns):
    with DnsServer({"_dmarc.xn--bcher-kva.test": {"TXT": ["v=DMARC1; p=reject"]}}) as idn:
        sess = make_session(CONFIG, message="From: <a@Bücher.test>\n\nb\n".encode())
        result = plugin(idn).hook_data_post(sess)
    assert result[0] is Result.DENY
    assert sess.transaction.notes["dmarc"].from_domain == "xn--bcher-kva.test"


@pytest.mark.parametrize("header, domain", [
    ("From: a@weiß.test", "xn--wei-7ka.test"),  # IDNA 2008; IDNA 2003 said weiss.test
    ("From: a@XN--Wei-7ka.Test.", "xn--wei-7ka.test"),
    ("From: a@\u212aiwi.test", "\u212aiwi.test"),  # refused by IDNA 2008: never kiwi.test
])
def test_from_domain_is_the_idna2008_a_label(header, domain):
    from helpers.fakes import message_body
    from qsmtp.plugins.builtin._sender_auth import from_domain_of, parse_headers
    body = message_body(header.encode() + b"\nSubject: x\n\nbody\n")
    assert from_domain_of(parse_headers(body)) == domain


def test_alignment_compares_a_labels():
    psl = PublicSuffixList.load("dmarc", PSL_PATH)
    assert psl.aligned("xn--wei-7ka.test", "weiß.test", strict=True)
    assert not psl.aligned("kiwi.test", "\u212aiwi.test", strict=True)
