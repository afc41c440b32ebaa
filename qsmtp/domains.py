"""Domain names as IDNA 2008 (RFC 5890-5893) and RFC 6531 define them (pure).

The one place that decides what a domain is and how two domains compare;
every plugin that matches, lists or looks up domains goes through here.

- A domain on the wire or in the config is a sequence of labels, each either
  an ASCII LDH label (letters, digits, hyphens; an `xn--` label must be a
  valid A-label) or a U-label valid under IDNA 2008. Nothing the client sent
  is mapped (no UTS #46, no IDNA 2003 `str.lower()`/`nameprep`): U+212A
  KELVIN SIGN is DISALLOWED and refused, it does not turn into `k`; `ß`
  stays `ß` (`xn--strae-oqa`), it does not turn into `ss`. Only ASCII
  letters are case-folded (DNS names are case-insensitive in ASCII only,
  RFC 4343).
- Domains are compared, matched and looked up in their A-label form
  (`to_ascii`): lower case, no trailing dot. So `straße.test` and
  `xn--strae-oqa.test` are one domain, and `kiwi.test` is never matched by a
  look-alike.

Uses the `idna` library (IDNA 2008 tables); no tables are written here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import idna

_LDH = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_MAX_NAME = 253  # octets of the A-label form without the trailing dot (RFC 1035)


class DomainError(ValueError):
    """Not a domain under IDNA 2008; the message is safe to show a client."""


@functools.lru_cache(maxsize=4096)
def to_ascii(domain: str) -> str:
    """The A-label form of `domain` (lower case, no trailing dot).

    Raises DomainError when a label is neither LDH nor a valid U-label,
    or when an `xn--` label is not a valid A-label."""
    name = domain[:-1] if domain.endswith(".") else domain
    if not name:
        raise DomainError("empty domain")
    labels = [_label_to_ascii(label) for label in name.translate(_ASCII_LOWER).split(".")]
    ascii_name = ".".join(labels)
    if len(ascii_name) > _MAX_NAME:
        raise DomainError("domain too long")
    return ascii_name


def _label_to_ascii(label: str) -> str:
    if label.isascii():
        if _LDH.fullmatch(label) is None:
            raise DomainError(f"bad label {label!r}")
        if label.startswith("xn--"):
            try:
                # ulabel() decodes and checks the U-label under IDNA 2008;
                # re-encoding must give the same A-label (no fake A-labels).
                if idna.alabel(idna.ulabel(label)).decode("ascii") != label:
                    raise DomainError(f"not a valid A-label {label!r}")
            except (idna.IDNAError, UnicodeError):
                raise DomainError(f"not a valid A-label {label!r}") from None
        return label
    try:
        return idna.alabel(label).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise DomainError(f"not a valid IDNA 2008 label {label!r}: {exc}") from None


def comparable(domain: str) -> str:
    """`to_ascii(domain)`, or for a name IDNA 2008 refuses, the name with only
    ASCII letters lower-cased and one trailing dot dropped: never equal to a
    valid domain's A-label form (no `str.lower()`, which folds U+212A to "k")."""
    try:
        return to_ascii(domain)
    except DomainError:
        name = domain[:-1] if domain.endswith(".") else domain
        return name.translate(_ASCII_LOWER)


def lookup_name(name: str) -> str:
    """The DNS name to query for `name`: its non-ASCII labels as IDNA 2008
    A-labels, ASCII labels as they are (service labels such as `_dmarc` and
    reversed IPs are DNS names, not host names). Never the IDNA 2003 mapping
    DNS libraries apply to Unicode names (`weiß` -> `weiss`).
    Raises DomainError for a label IDNA 2008 refuses."""
    if name.isascii():
        return name
    labels = name.split(".")
    for index, label in enumerate(labels):
        if not label.isascii():
            labels[index] = _label_to_ascii(label.translate(_ASCII_LOWER))
    return ".".join(labels)


class DomainSet:
    """Configured domains, held in A-label form.

    An entry `example.test` matches only itself; `.example.test` matches it
    and every subdomain (with `subdomains=True` every entry does, the
    convention of allow-lists such as rhsbl's). Entries are normalised once,
    when the set is built: a bad entry raises DomainError naming it."""

    def __init__(self, entries: Iterable[str], subdomains: bool = False):
        self.exact: set[str] = set()
        suffixes: list[str] = []
        for entry in entries:
            text = str(entry).strip()
            wildcard = subdomains or text.startswith(".")
            try:
                name = to_ascii(text[1:] if text.startswith(".") else text)
            except DomainError as exc:
                raise DomainError(f"{entry!r}: {exc}") from None
            self.exact.add(name)
            if wildcard:
                suffixes.append("." + name)
        self.suffixes = tuple(suffixes)

    def __contains__(self, domain: object) -> bool:
        """`domain` (wire form, U- or A-labels) is in the set; an invalid
        domain or an address literal is in no set."""
        if not isinstance(domain, str) or domain.startswith("["):
            return False
        try:
            name = to_ascii(domain)
        except DomainError:
            return False
        return name in self.exact or name.endswith(self.suffixes)
