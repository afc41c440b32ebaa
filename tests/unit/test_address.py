"""smtp/address.py: RFC 5321 path parsing."""

from __future__ import annotations

import pytest

from qsmtp.smtp.address import AddressError, parse_path, split_path


@pytest.mark.parametrize("text, local, domain", [
    ("<user@example.test>", "user", "example.test"),
    ("<first.last+tag@sub.example.test>", "first.last+tag", "sub.example.test"),
    ("<!#$%&'*+-/=?^_`{|}~@x.test>", "!#$%&'*+-/=?^_`{|}~", "x.test"),
    ('<"quoted user"@example.test>', '"quoted user"', "example.test"),
    ('<"a\\"b"@example.test>', '"a\\"b"', "example.test"),
    ('<"u@foreign.test"@example.test>', '"u@foreign.test"', "example.test"),
    ('<"a>b"@example.test>', '"a>b"', "example.test"),
    ("<u@[192.0.2.1]>", "u", "[192.0.2.1]"),
    ("<u@[IPv6:2001:db8::1]>", "u", "[IPv6:2001:db8::1]"),
    ("<u@[x-tag:content]>", "u", "[x-tag:content]"),
    ("<u@example.test.>", "u", "example.test."),
    ("<u%foreign.test@example.test>", "u%foreign.test", "example.test"),
    ("<U@EXAMPLE.TEST>", "U", "EXAMPLE.TEST"),
    ("<u@a-b.example.test>", "u", "a-b.example.test"),
])
def test_valid(text, local, domain):
    addr = parse_path(text, allow_null=False)
    assert (addr.local, addr.domain, addr.route, addr.raw) == (local, domain, (), text)


def test_null_sender():
    addr = parse_path("<>", allow_null=True)
    assert addr.is_null and addr.address == "" and addr.raw == "<>"
    with pytest.raises(AddressError):
        parse_path("<>", allow_null=False)


def test_source_route_kept():
    addr = parse_path("<@a.test,@b.test:u@d.test>", allow_null=False)
    assert addr.route == ("a.test", "b.test")
    assert (addr.local, addr.domain, addr.address) == ("u", "d.test", "u@d.test")


@pytest.mark.parametrize("text", ["<postmaster>", "<Postmaster>", "<POSTMASTER>"])
def test_postmaster_without_domain_only_when_allowed(text):
    addr = parse_path(text, allow_null=False, allow_postmaster=True)
    assert addr.domain is None and addr.local_unquoted.lower() == "postmaster"
    with pytest.raises(AddressError):
        parse_path(text, allow_null=True)


@pytest.mark.parametrize("text", [
    "user@example.test", "<user@example.test", "user@example.test>", "<user>",
    "<@example.test>", "<user@>", "<user@@example.test>", "<us er@example.test>",
    "<user.@example.test>", "<.user@example.test>", "<us..er@example.test>",
    "<user@example..test>", "<user@-example.test>", "<user@example-.test>",
    "<user@exa_mple.test>", "<user@[300.1.1.1]>", "<user@[IPv6:zz::1]>",
    "<user@[192.0.2.1>", '<"unterminated@example.test>', '<"a"b@example.test>',
    "<@a.test:>", "<@a.test u@b.test>", "<@[1.2.3.4]:u@b.test>", "<a.test:u@b.test>",
    "<u@" + "a" * 64 + ".test>", "<u@" + ".".join(["abcdefghi"] * 30) + ">",
    "<postmaster >", "< u@example.test>", "<u@example.test >", "<u\x00@example.test>",
    "<u@exam\tple.test>", "",
])
def test_invalid(text):
    with pytest.raises(AddressError):
        parse_path(text, allow_null=True, allow_postmaster=True)


@pytest.mark.parametrize("text", ["<jörg@example.test>", "<u@bücher.test>",
                                  '<"jörg k"@example.test>'])
def test_non_ascii_needs_smtputf8(text):
    with pytest.raises(AddressError):
        parse_path(text, allow_null=False)
    assert parse_path(text, allow_null=False, smtputf8=True).raw == text


def test_unquoted_local_part():
    assert parse_path('<"a\\"b c"@x.test>', allow_null=False).local_unquoted == 'a"b c'


@pytest.mark.parametrize("text, path, rest", [
    ("<a@b.test>", "<a@b.test>", ""),
    ("<a@b.test> SIZE=10 BODY=8BITMIME", "<a@b.test>", "SIZE=10 BODY=8BITMIME"),
    ('<"x> y"@b.test> SIZE=1', '<"x> y"@b.test>', "SIZE=1"),
    ("<>", "<>", ""),
    ("a@b.test SIZE=1", "a@b.test", "SIZE=1"),
])
def test_split_path(text, path, rest):
    assert split_path(text) == (path, rest)


@pytest.mark.parametrize("text", ["<a@b.test>junk", "<a@b.test", '<"a>@b.test'])
def test_split_path_errors(text):
    with pytest.raises(AddressError):
        split_path(text)


# -- hostile bytes and IDNA 2008 (issue: hostile input) -------------------------
def _wire(raw: bytes) -> str:
    """A path as the engine hands it over (surrogateescape for invalid UTF-8)."""
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("raw", [
    b"<j\xff\xfe@example.test>",  # not UTF-8 at all
    b"<j\xed\xa0\x80@example.test>",  # an encoded surrogate (U+D800)
    b"<j\xc0\xaf@example.test>",  # overlong "/"
    b"<u@ex\xe4mple.test>",  # Latin-1, not UTF-8
    "<j\u0085@example.test>".encode(),  # C1 NEL
    "<j\u2028@example.test>".encode(),  # LINE SEPARATOR
    '<"j\u2029"@example.test>'.encode(),  # PARAGRAPH SEPARATOR, quoted
    b"<j\x1b[31m@example.test>",  # ESC
    b"<j\x7f@example.test>",  # DEL
    b"<j\x0b@example.test>",  # VT
])
def test_hostile_bytes_are_refused_even_with_smtputf8(raw):
    with pytest.raises(AddressError) as info:
        parse_path(_wire(raw), allow_null=False, smtputf8=True)
    assert info.value.kind == "bytes"


@pytest.mark.parametrize("text", [
    "<u@\u212aiwi.test>",  # KELVIN SIGN: DISALLOWED, not "k"
    "<u@BÜCHER.test>",  # upper case is not a U-label (nothing is mapped)
    "<u@xn--zz.test>",  # fake A-label
    "<u@xn--iwi-xk1a.test>",  # the A-label of KELVIN SIGN + "iwi"
    "<@\u212aiwi.test:u@example.test>",  # in a source route too
])
def test_domains_outside_idna2008_are_refused(text):
    with pytest.raises(AddressError) as info:
        parse_path(text, allow_null=False, smtputf8=True)
    assert info.value.kind == "domain"


@pytest.mark.parametrize("text, ascii_domain", [
    ("<u@straße.test>", "xn--strae-oqa.test"),
    ("<u@xn--strae-oqa.test>", "xn--strae-oqa.test"),
    ("<u@XN--STRAE-OQA.Test.>", "xn--strae-oqa.test"),
    ("<u@weiß.test>", "xn--wei-7ka.test"),  # not weiss.test (IDNA 2003)
    ("<u@[192.0.2.1]>", "[192.0.2.1]"),
])
def test_ascii_domain_is_the_a_label(text, ascii_domain):
    assert parse_path(text, allow_null=False, smtputf8=True).ascii_domain == ascii_domain
