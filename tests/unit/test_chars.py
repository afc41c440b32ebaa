"""qsmtp.smtp.chars: what the protocol refuses, what headers escape (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsmtp.smtp.chars import escape, refused


@pytest.mark.parametrize("text", [
    "a\x0bb", "a\x0cb", "a\x1bb", "a\x7fb", "a\u0085b", "a\u2028b", "a\u2029b",
    "a\tb", b"a\xffb".decode("utf-8", "surrogateescape"),
    b"a\xed\xa0\x80b".decode("utf-8", "surrogateescape"),
])
def test_refused(text):
    assert refused(text) is not None


@pytest.mark.parametrize("text", ["mx.example.test", "[192.0.2.1]", "bücher.test",
                                  "jörg@straße.test", ""])
def test_not_refused(text):
    assert refused(text) is None


@pytest.mark.parametrize("text, escaped", [
    ("a\x1b[31mb", "a\\x1B[31mb"),
    ("a\u0085b\u2028c", "a\\x85b\\u2028c"),
    (b"a\xff\xfeb".decode("utf-8", "surrogateescape"), "a\\xFF\\xFEb"),
    ("evil\u202etxt.exe", "evil\\u202Etxt.exe"),  # RIGHT-TO-LEFT OVERRIDE
    ("a\nb\rc", "a\\x0Ab\\x0Dc"),
    ("jörg@bücher.test", "jörg@bücher.test"),
])
def test_escape(text, escaped):
    assert escape(text) == escaped
    assert escape(text).encode("utf-8")  # always valid UTF-8


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_wire_bytes_escape_to_one_clean_utf8_line(raw):
    import unicodedata
    text = raw.decode("utf-8", "surrogateescape")
    out = escape(text)
    out.encode("utf-8")  # no lone surrogate: valid UTF-8
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in out)
    if refused(text) is not None:
        assert out != text
    elif text.isascii():
        assert out == text  # printable ASCII is left alone
