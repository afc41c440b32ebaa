"""qsmtp.domains: IDNA 2008 validation and A-label comparison (pure)."""

from __future__ import annotations

import pytest

from qsmtp.domains import DomainError, DomainSet, to_ascii


@pytest.mark.parametrize("domain, ascii_name", [
    ("example.test", "example.test"),
    ("EXAMPLE.Test.", "example.test"),
    ("straße.test", "xn--strae-oqa.test"),  # IDNA 2008: ß is PVALID, not "ss"
    ("xn--strae-oqa.test", "xn--strae-oqa.test"),
    ("XN--Strae-OQA.test", "xn--strae-oqa.test"),
    ("weiß.test", "xn--wei-7ka.test"),
    ("bücher.test", "xn--bcher-kva.test"),
    ("r3---sn-abc.example.test", "r3---sn-abc.example.test"),  # LDH, not an A-label
])
def test_to_ascii(domain, ascii_name):
    assert to_ascii(domain) == ascii_name


@pytest.mark.parametrize("domain", [
    "\u212aiwi.test",  # KELVIN SIGN: str.lower() would make it kiwi.test
    "xn--iwi-xk1a.test",  # its A-label is no better
    "BÜCHER.test", "\u00d6l.test",  # no case mapping outside ASCII
    "xn--zz.test", "a..b", "-a.test", "a-.test", "a_b.test", "", ".",
    "a" * 64 + ".test", ".".join(["abcdefghi"] * 26),
    "fu\u00dfball\u200d.test",  # ZWJ outside its CONTEXTJ rule
])
def test_to_ascii_refuses(domain):
    with pytest.raises(DomainError):
        to_ascii(domain)


def test_domain_set_matches_both_forms_both_ways():
    configured = DomainSet(["straße.test", "xn--bcher-kva.test", ".sub.example.test"])
    assert "xn--strae-oqa.test" in configured
    assert "STRAßE.test" in configured
    assert "bücher.test" in configured
    assert "mx.sub.example.test" in configured and "sub.example.test" in configured
    assert "strasse.test" not in configured  # the IDNA 2003 mapping widens nothing
    assert "mx.straße.test" not in configured  # exact entries match only themselves
    assert "[192.0.2.1]" not in configured and "\u212aiwi.test" not in configured


def test_domain_set_subdomains_and_bad_entries():
    allow = DomainSet(["weiß.test"], subdomains=True)
    assert "mx.xn--wei-7ka.test" in allow and "weiss.test" not in allow
    with pytest.raises(DomainError, match="KELVIN|212a|iwi"):
        DomainSet(["\u212aiwi.test"])


def test_comparable_never_folds_a_look_alike():
    from qsmtp.domains import comparable
    assert comparable("STRAßE.test.") == "xn--strae-oqa.test"
    assert comparable("\u212aIWI.test") == "\u212aiwi.test"  # not "kiwi.test"
