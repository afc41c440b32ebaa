"""RFC 5321 paths: `<>`, `<local@domain>`, `<@route:local@domain>`, quoted
local parts, address literals. `parse_path` is the only parser of addresses.

Beyond the grammar, a path is refused when it holds invalid UTF-8 (RFC 3629:
also encoded surrogates and overlong forms), a control character or U+2028/
U+2029 (`chars.refused`), or a domain that is not valid under IDNA 2008
(`qsmtp.domains`: U-labels or A-labels, nothing mapped)."""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from qsmtp import domains
from qsmtp.smtp import chars


class AddressError(ValueError):
    """Unparseable path; the message is safe to show to the client.

    `kind`: "syntax" (the RFC 5321 grammar), "bytes" (invalid UTF-8 or a
    control character) or "domain" (not a domain under IDNA 2008); the
    engine answers 501 to the first and 553 to the others."""

    def __init__(self, message: str, kind: str = "syntax"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Address:
    local: str  # as on the wire: a quoted local part keeps its quotes
    domain: str | None  # None for <> and for a bare local part (<postmaster>)
    route: tuple[str, ...] = ()  # source route hops (<@a,@b:u@d>), kept for policy
    raw: str = ""  # the path exactly as the client sent it, brackets included

    @property
    def is_null(self) -> bool:
        return self.local == "" and self.domain is None

    @property
    def local_unquoted(self) -> str:
        """Local part with quoting and quoted-pairs removed."""
        text = self.local
        if len(text) >= 2 and text[0] == text[-1] == '"':
            out, escaped = [], False
            for char in text[1:-1]:
                if escaped or char != "\\":
                    out.append(char)
                    escaped = False
                else:
                    escaped = True
            return "".join(out)
        return text

    @property
    def address(self) -> str:
        """`local@domain` without brackets or route; '' for the null sender."""
        if self.domain is None:
            return self.local
        return f"{self.local}@{self.domain}"

    @property
    def ascii_domain(self) -> str | None:
        """The domain in A-label form (lower case, no trailing dot): the form
        domains are compared and looked up in. Literals are kept as sent; a
        domain IDNA 2008 refuses (only in an Address not made by parse_path)
        gets a form no valid domain has (`domains.comparable`)."""
        if self.domain is None or self.domain.startswith("["):
            return self.domain
        return domains.comparable(self.domain)

    def __str__(self) -> str:
        return self.address


# RFC 5321 4.1.2 / RFC 5322 3.2.3 atext; RFC 6531 adds any non-ASCII character.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_DOT_STRING_UTF8 = re.compile(rf"(?:[{_ATEXT}]|[^\x00-\x7f])+(?:\.(?:[{_ATEXT}]|[^\x00-\x7f])+)*")
# qtextSMTP is %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP is "\\" %d32-126.
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_LABEL_UTF8 = re.compile(r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f])*"
                         r"(?:[A-Za-z0-9]|[^\x00-\x7f]))?")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?:[\x21-\x5a\x5e-\x7e]+")
_MAX_DOMAIN = 255
_MAX_LABEL = 63


# Addresses recur (a site's own recipients above all) and an Address is
# immutable: a parse is remembered per worker. Bounded: a few hundred KiB
# at most; refusals (AddressError) are never cached.
@functools.lru_cache(maxsize=256)
def parse_path(text: str, *, allow_null: bool, smtputf8: bool = False,
               allow_postmaster: bool | None = None) -> Address:
    """Parse a MAIL/RCPT path (the part after `FROM:`/`TO:`, without params).

    `allow_null`: `<>` is valid (MAIL). `allow_postmaster`: `<postmaster>`
    without a domain is valid, any case (RCPT, RFC 5321 4.5.1); by default
    it is allowed exactly when `<>` is not (a forward-path). Non-ASCII
    is refused unless `smtputf8`. Raises AddressError."""
    reason = chars.refused(text)
    if reason is not None:
        raise AddressError(f"{reason} in address", "bytes")
    if not text.startswith("<") or not text.endswith(">") or len(text) < 2:
        raise AddressError("path must be enclosed in <>")
    if not smtputf8 and not text.isascii():
        raise AddressError("non-ASCII address needs SMTPUTF8")
    inner = text[1:-1]
    if allow_postmaster is None:
        allow_postmaster = not allow_null
    if inner == "":
        if allow_null:
            return Address(local="", domain=None, raw=text)
        raise AddressError("null path not allowed here")
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        hops, sep, inner = inner.partition(":")
        if not sep:
            raise AddressError("source route without ':'")
        route = tuple(_route_hop(hop, smtputf8) for hop in hops.split(","))
    if allow_postmaster and not route and inner.lower() == "postmaster":
        return Address(local=inner, domain=None, raw=text)
    local, domain = _split_mailbox(inner)
    _check_local(local, smtputf8)
    return Address(local=local, domain=_check_domain(domain, smtputf8), route=route, raw=text)


def split_path(text: str) -> tuple[str, str]:
    """Split `<path> PARAMS` into the path and the parameter text.

    Quoted local parts may hold `>` and spaces, so the end of the path is
    found by scanning, not by str.find. A path without `<` ends at the first
    space (parse_path then refuses it)."""
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return path, rest
    in_quotes = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and in_quotes:
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == ">" and not in_quotes:
            rest = text[index + 1:]
            if rest and not rest.startswith(" "):
                raise AddressError("junk after the path")
            return text[:index + 1], rest.strip(" ")
    raise AddressError("path not closed with >")


def _route_hop(hop: str, smtputf8: bool) -> str:
    if not hop.startswith("@") or hop.startswith("@["):
        raise AddressError("bad source route")
    return _check_domain(hop[1:], smtputf8, literal=False)


def _split_mailbox(inner: str) -> tuple[str, str]:
    if inner.startswith('"'):
        match = (_QUOTED_UTF8 if not inner.isascii() else _QUOTED).match(inner)
        if match is None or inner[match.end():match.end() + 1] != "@":
            raise AddressError("bad quoted local part")
        return inner[:match.end()], inner[match.end() + 1:]
    local, sep, domain = inner.rpartition("@")
    if not sep:
        raise AddressError("address has no domain")
    return local, domain


def _check_local(local: str, smtputf8: bool) -> None:
    if local.startswith('"'):
        return  # already matched by _split_mailbox
    pattern = _DOT_STRING_UTF8 if smtputf8 else _DOT_STRING
    if not local or pattern.fullmatch(local) is None:
        raise AddressError("bad local part")


def _check_domain(domain: str, smtputf8: bool, literal: bool = True) -> str:
    if literal and domain.startswith("["):
        return _check_literal(domain)
    # One trailing dot (the absolute form) is tolerated; relay strips it.
    name = domain[:-1] if domain.endswith(".") else domain
    if not name or len(domain.encode("utf-8", "surrogatepass")) > _MAX_DOMAIN:
        raise AddressError("bad domain")
    pattern = _LABEL_UTF8 if smtputf8 else _LABEL
    for label in name.split("."):
        if len(label) > _MAX_LABEL or pattern.fullmatch(label) is None:
            raise AddressError("bad domain")
    try:
        domains.to_ascii(name)
    except domains.DomainError:
        raise AddressError("domain is not valid under IDNA 2008", "domain") from None
    return domain


def _check_literal(domain: str) -> str:
    if not domain.endswith("]"):
        raise AddressError("bad address literal")
    body = domain[1:-1]
    try:
        if body[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(body[5:])
        elif ":" in body:
            if _GENERAL_LITERAL.fullmatch(body) is None:
                raise ValueError(body)
        else:
            ipaddress.IPv4Address(body)
    except ValueError:
        raise AddressError("bad address literal") from None
    return domain
