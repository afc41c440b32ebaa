"""Characters a client may not smuggle into what we write (pure).

Command arguments are decoded with `surrogateescape`, so a byte that is not
part of valid UTF-8 (RFC 3629: also overlong forms and encoded surrogates)
arrives as a lone surrogate U+DC80..U+DCFF.

- `refused(text)`: why the protocol refuses the text, or None. Refused are
  invalid UTF-8, control characters (C0, DEL, C1 such as U+0085 NEL) and the
  Unicode line/paragraph separators U+2028/U+2029: none of them is part of a
  domain, a HELO argument or a mailbox (RFC 5321 4.1.2, RFC 6531 3.3).
- `escape(text)`: the text with every such character, and the invisible
  bidirectional controls that can make a header read differently from what
  it says, written as `\\xHH` / `\\uHHHH`. What is left is printable, valid
  UTF-8 on one line, so a header built from it cannot be split or garbled.
"""

from __future__ import annotations

import unicodedata

# Cc = C0, DEL, C1; Cs = lone surrogates (invalid UTF-8 after surrogateescape);
# Zl/Zp = U+2028/U+2029.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Bidi embeddings/overrides/isolates and marks: legal text, but a header
# containing them can display reordered; escaped, never refused.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                  "\u2066\u2067\u2068\u2069")


def _is_refused(char: str) -> bool:
    return unicodedata.category(char) in _REFUSED_CATEGORIES


def refused(text: str) -> str | None:
    """A short reason when `text` holds a character the protocol refuses."""
    if text.isascii() and text.isprintable():
        return None  # the common case, without a per-character walk
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            return "invalid UTF-8"
        if category in _REFUSED_CATEGORIES:
            return f"control character U+{ord(char):04X}"
    return None


def escape(text: str) -> str:
    """`text` safe to write into a header: refused and bidi characters are
    written as escapes; a byte of invalid UTF-8 as `\\xHH` of that byte."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape_char(char) for char in text)


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02X}"  # the original byte
    if _is_refused(char) or char in _BIDI:
        return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}"
    return char
