"""Relay decisions as a table (docs/REFERENCE.md "Precise rules", Relay)."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from qsmtp import config as qconfig
from qsmtp.plugins.api import Result
from qsmtp.plugins.builtin.relay import Relay
from qsmtp.smtp.address import Address, AddressError, parse_path
from qsmtp.smtp.state import ConnectionInfo, Session

MATRIX = pathlib.Path(__file__).parents[1] / "reliability" / "relay_matrix.tsv"


def make_relay(tmp_path, clients='["127.0.0.1/32"]',
               domains='["example.test", ".sub.example.test", "bücher.test"]'):
    path = tmp_path / "qsmtp.toml"
    path.write_text(textwrap.dedent(f"""
        [relay]
        clients = {clients}
        domains = {domains}
    """))
    cfg = qconfig.load(str(path))
    return Relay(cfg, "relay", {}), cfg


def A(local, domain=None, route=()):
    return Address(local=local, domain=domain, route=tuple(route))


ACCEPT, REFUSE = "accept", "refuse"
# (client?, address, expected, why)
CASES = [
    (False, A("user", "example.test"), ACCEPT, "our domain"),
    (False, A("USER", "EXAMPLE.TEST"), ACCEPT, "case-insensitive"),
    (False, A("user", "example.test."), ACCEPT, "trailing dot: same domain"),
    (False, A("user", "example.test.."), REFUSE, "two trailing dots"),
    (False, A("user", "foreign.test"), REFUSE, "foreign"),
    (False, A("user", "foreign.test."), REFUSE, "foreign, trailing dot"),
    (False, A("user", "sub2.example.test"), REFUSE, "no subdomains for example.test"),
    (False, A("user", "notexample.test"), REFUSE, "suffix is not a domain match"),
    (False, A("user", "example.test.foreign.test"), REFUSE, "our name as a label"),
    (False, A("user", "sub.example.test"), ACCEPT, ".sub.example.test covers itself"),
    (False, A("user", "a.sub.example.test"), ACCEPT, "subdomain"),
    (False, A("user", "deep.A.Sub.example.test"), ACCEPT, "deep subdomain"),
    (False, A("user", "xsub.example.test"), REFUSE, "suffix without a dot"),
    (False, A("user%foreign.test", "example.test"), REFUSE, "percent hack"),
    (False, A("foreign.test!user", "example.test"), REFUSE, "bang path"),
    (False, A('"user@foreign.test"', "example.test"), REFUSE, "quoted @"),
    (False, A('"user%foreign.test"', "example.test"), REFUSE, "quoted %"),
    (False, A('"a!b"', "example.test"), REFUSE, "quoted !"),
    (False, A('"quoted user"', "example.test"), ACCEPT, "harmless quoting"),
    (False, A("user", "foreign.test", ["example.test"]), REFUSE, "route via ours"),
    (False, A("user", "example.test", ["foreign.test"]), REFUSE, "any route"),
    (False, A("user", "[127.0.0.1]"), REFUSE, "address literal"),
    (False, A("user", "[IPv6:::1]"), REFUSE, "IPv6 literal"),
    (False, A("user", "127.0.0.1"), REFUSE, "bare IP"),
    (False, A("user", "xn--bcher-kva.test"), ACCEPT, "A-label of our IDN"),
    (False, A("user", "XN--BCHER-KVA.TEST"), ACCEPT, "A-label, upper case"),
    (False, A("user", "bücher.test"), ACCEPT, "U-label (SMTPUTF8)"),
    # IDNA 2008 has no upper-case U-labels and qsmtp maps nothing (no UTS #46).
    (False, A("user", "BÜCHER.test"), REFUSE, "upper-case non-ASCII is not a U-label"),
    (False, A("user", "\u212aiwi.example.test"), REFUSE, "KELVIN SIGN is not k"),
    (False, A("user", "xn--bcher-kva.foreign.test"), REFUSE, "IDN label of foreign"),
    (False, A("user", "xn--ample-foreign.test"), REFUSE, "punycode-looking"),
    (False, A("user"), REFUSE, "no domain"),
    (False, A("postmaster"), ACCEPT, "postmaster"),
    (False, A("PostMaster"), ACCEPT, "postmaster, any case"),
    (False, A('"postmaster"'), ACCEPT, "postmaster, quoted"),
    (False, A("postmaster%foreign.test"), REFUSE, "postmaster percent hack"),
    (False, A('"postmaster@foreign.test"'), REFUSE, "quoted postmaster@foreign"),
    (False, A("postmaster", "foreign.test"), REFUSE, "postmaster at foreign"),
    (False, A("postmaster", "example.test"), ACCEPT, "postmaster at ours"),
    (True, A("user", "foreign.test"), ACCEPT, "relay client"),
    (True, A("user%x", "foreign.test"), ACCEPT, "relay client, anything well-formed"),
    (True, A("user", "[192.0.2.1]"), ACCEPT, "relay client, literal"),
    (True, A("postmaster"), ACCEPT, "relay client, postmaster"),
    (True, A("user"), REFUSE, "no domain even for clients"),
]


@pytest.mark.parametrize("client, rcpt, expected, why", CASES,
                         ids=[c[3] for c in CASES])
def test_decision_table(tmp_path, client, rcpt, expected, why):
    relay, _ = make_relay(tmp_path)
    result, message = relay.decide(rcpt, client)
    if expected == ACCEPT:
        assert result is Result.OK
    else:
        assert (result, message) == (Result.DENY, "5.7.1 Relaying denied")


def test_idna2003_mapping_does_not_widen_our_domains(tmp_path):
    # The idna codec maps ß -> ss; "strasse.test" must not become ours.
    relay, _ = make_relay(tmp_path, domains='["straße.test"]')
    assert relay.is_ours("straße.test")
    assert not relay.is_ours("strasse.test")
    assert relay.is_ours("xn--strae-oqa.test")  # its A-label (IDNA 2008)
    assert not relay.is_ours("xn--strasse-.test")


@pytest.mark.parametrize("configured, sent", [
    ("bücher.test", "xn--bcher-kva.test"),  # U-label configured, A-label sent
    ("xn--bcher-kva.test", "bücher.test"),  # and the other way round
    ("straße.test", "xn--strae-oqa.test"),
    ("xn--strae-oqa.test", "straße.test"),
    (".straße.test", "mx.xn--strae-oqa.test"),
    (".xn--strae-oqa.test", "mx.straße.test"),
])
def test_a_label_and_u_label_are_one_domain(tmp_path, configured, sent):
    relay, _ = make_relay(tmp_path, domains=f'["{configured}"]')
    result, _ = relay.decide(parse_path(f"<u@{sent}>", allow_null=False, smtputf8=True),
                             client=False)
    assert result is Result.OK


def test_kelvin_sign_is_not_k(tmp_path):
    # str.lower() folds U+212A KELVIN SIGN to "k": it must not reach our domain.
    relay, _ = make_relay(tmp_path, domains='["kiwi.test"]')
    assert not relay.is_ours("\u212aiwi.test")
    assert relay.is_ours("KIWI.test")


@pytest.mark.parametrize("bad", ["a..ü.test", "\u212aiwi.test", "xn--zz.test", ".BÜCHER.test"])
def test_bad_idn_domain_is_a_config_error(tmp_path, bad):
    # Refused by the one settings validator: exit 78 with file, key, reason.
    with pytest.raises(qconfig.ConfigError, match="relay.domains: not a domain"):
        make_relay(tmp_path, domains=f'["{bad}"]')


def hook_session(cfg, ip, auth=None):
    sess = Session(conn=ConnectionInfo(ip, 4000, "127.0.0.1", 25), config=cfg)
    sess.auth_user = auth
    return sess


@pytest.mark.parametrize("ip, auth, expected", [
    ("127.0.0.1", None, Result.OK),
    ("127.0.0.2", None, Result.DENY),
    ("::ffff:127.0.0.1", None, Result.OK),
    ("192.0.2.7", "alice", Result.OK),  # authenticated sessions may relay
    ("192.0.2.7", None, Result.DENY),
])
def test_hooks_connect_then_rcpt(tmp_path, ip, auth, expected):
    relay, cfg = make_relay(tmp_path)
    sess = hook_session(cfg, ip, auth)
    relay.hook_connect(sess)
    result, _ = relay.hook_rcpt(sess, A("user", "foreign.test"), {})
    assert result is expected


def matrix_rows():
    for line in MATRIX.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            client, rcpt, expect, why = line.split("\t")
            yield pytest.param(client, rcpt, expect, id=why)


@pytest.mark.parametrize("client, text, expect", list(matrix_rows()))
def test_shared_relay_matrix(tmp_path, client, text, expect):
    """tests/reliability/relay_matrix.tsv through the real parser."""
    relay, _ = make_relay(tmp_path)
    try:
        rcpt = parse_path(text, allow_null=False, smtputf8=False)
    except AddressError:
        assert expect == "refuse"
        return
    result, _ = relay.decide(rcpt, client == "relay")
    assert (result is Result.OK) == (expect == "accept")
