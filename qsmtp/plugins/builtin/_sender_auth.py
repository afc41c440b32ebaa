"""Shared parts of the sender-authentication plugins (spf, dkim, dmarc):
the one Authentication-Results header they build together, the verdicts they
leave in the transaction notes, the organisational domain (Public Suffix
List) and identifier alignment.

Every one of them takes `authserv_id` (default `""` = `server.me`): the
authserv-id written in Authentication-Results (RFC 8601 2.5).

Transaction notes (read them from your own plugins):
- `txn.notes["spf"]`: `SpfVerdict` (result, domain, identity, explanation)
- `txn.notes["dkim"]`: list of `DkimVerdict` (result, domain, selector, ...)
- `txn.notes["dmarc"]`: `DmarcVerdict` (result, from_domain, policy, disposition)
- `txn.notes["authres"]`: the authres result objects of the header so far
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qsmtp import domains
from qsmtp.plugins.api import Option, Plugin, PluginError

if TYPE_CHECKING:
    from qsmtp.smtp.message import MessageBody
    from qsmtp.smtp.state import Session, Transaction


AUTHRES_OPTIONS = {
    "authserv_id": Option(str, "", "authserv-id in Authentication-Results; '' = server.me"),
}
# Debian's `publicsuffix` package (a runtime dependency of the dmarc plugin).
PSL_PATH = "/usr/share/publicsuffix/public_suffix_list.dat"
_PSL_CACHE: dict[tuple[str, int], PublicSuffixList] = {}


@dataclass
class SpfVerdict:
    result: str  # pass fail softfail neutral none temperror permerror
    domain: str  # the domain checked (MAIL FROM domain, or HELO for <>)
    identity: str  # "mailfrom" | "helo"
    explanation: str = ""
    received_spf: str = ""  # the Received-SPF header value pyspf builds


@dataclass
class DkimVerdict:
    result: str  # pass fail neutral temperror permerror
    domain: str  # d=
    selector: str = ""  # s=
    b: str = ""  # first characters of b= (RFC 6008 header.b)
    reason: str = ""


@dataclass
class DmarcVerdict:
    result: str  # pass fail none temperror permerror
    from_domain: str
    policy: str = "none"  # the policy that applies (p= or sp=): none quarantine reject
    disposition: str = "none"  # what we did: none quarantine reject
    reasons: list[str] = field(default_factory=list)


# -- Authentication-Results ---------------------------------------------------
def authserv_id(plugin: Plugin) -> str:
    return plugin.opts.authserv_id or plugin.config.server.me


def add_result(txn: Transaction, authserv: str, result: Any) -> None:
    """Add one authres result clause to the transaction's single
    Authentication-Results header (rebuilt in place in txn.added_headers, so
    spf, dkim and dmarc share one header, as RFC 8601 intends)."""
    import authres

    results = txn.notes.setdefault("authres", [])
    results.append(result)
    serv = txn.notes.setdefault("authres_id", authserv)
    header = authres.AuthenticationResultsHeader(authserv_id=serv, results=results)
    # One clause per line: readable, and well under the 998-octet limit.
    value = header.authserv_id + "".join(f";\n\t{r}" for r in header.results)
    line = f"Authentication-Results: {value}"
    old = txn.notes.get("authres_line")
    if old in txn.added_headers:
        txn.added_headers[txn.added_headers.index(old)] = line
    else:
        txn.added_headers.insert(0, line)
    txn.notes["authres_line"] = line


def skipped(session: Session) -> bool:
    """Mail the sender-auth checks leave alone: our own users and relay
    clients (their mail is outbound), whitelisted hosts."""
    return bool(session.auth_user or session.relay_client
                or session.notes.get("whitelisthost"))


def coded(action: str, perm: str, temp: str, text: str) -> str:
    """Prefix the RFC 7372 enhanced code matching the action's reply class."""
    if action in ("naughty", "note"):
        return text
    return f"{temp if action.startswith('denysoft') else perm} {text}"


def parse_headers(body: MessageBody) -> email.message.Message:
    """The message's header section as an email.message.Message."""
    parser = email.parser.BytesParser(policy=email.policy.compat32)
    return parser.parsebytes(body.header_block, headersonly=True)


def from_domain_of(headers: email.message.Message) -> str:
    """Domain of the one RFC 5322 From: address; "" when there is none,
    several From: fields, or several addresses (RFC 7489 6.6.1)."""
    # raw_items: compat32 would turn 8-bit (RFC 6532) values into "??"
    values = [_utf8(v) for k, v in headers.raw_items() if k.lower() == "from"]
    addresses = [a for a in email.utils.getaddresses(values) if a[1]]
    if len(values) != 1 or len(addresses) != 1 or "@" not in addresses[0][1]:
        return ""
    # An (RFC 6532) domain is looked up and aligned as its IDNA 2008 A-label.
    return domains.comparable(addresses[0][1].rpartition("@")[2].strip())


def _utf8(value: Any) -> str:
    """A header value parsed from bytes: undo surrogateescape, read UTF-8."""
    text = str(value)
    try:
        return text.encode("ascii", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return text


# -- organisational domain (RFC 7489 3.2) -------------------------------------
class PublicSuffixList:
    """The Public Suffix List algorithm (publicsuffix.org/list) over a
    list file: normal, wildcard (*.ck) and exception (!www.ck) rules."""

    def __init__(self, lines: list[str]):
        self.rules: set[str] = set()
        self.exceptions: set[str] = set()
        for line in lines:
            rule = line.strip().split(" ", 1)[0].lower()
            if not rule or rule.startswith("//"):
                continue
            target = self.exceptions if rule.startswith("!") else self.rules
            rule = rule.lstrip("!")
            target.add(rule)
            ascii_rule = _to_ascii(rule)
            if ascii_rule != rule:
                target.add(ascii_rule)

    @classmethod
    def load(cls, plugin_name: str, path: str) -> PublicSuffixList:
        """Parsed once per (path, mtime): a reload re-reads an updated list."""
        try:
            stamp = (path, os.stat(path).st_mtime_ns)
            psl = _PSL_CACHE.get(stamp)
            if psl is None:
                with open(path, encoding="utf-8") as handle:
                    psl = _PSL_CACHE[stamp] = cls(handle.read().splitlines())
        except OSError as exc:
            raise PluginError(plugin_name, "psl_file", f"{path}: {exc.strerror} "
                              "(install Debian's publicsuffix package)") from None
        if len(psl.rules) < 1:
            raise PluginError(plugin_name, "psl_file", f"{path}: no rules")
        return psl

    def public_suffix_len(self, labels: list[str]) -> int:
        """How many rightmost labels form the public suffix."""
        best = 1  # the implicit "*" rule
        for n in range(1, len(labels) + 1):
            name = ".".join(labels[-n:])
            if name in self.exceptions:
                return n - 1
            wildcard = ".".join(["*"] + labels[-n + 1:]) if n > 1 else "*"
            if name in self.rules or (n > 1 and wildcard in self.rules):
                best = n
        return best

    def org_domain(self, domain: str) -> str:
        """The organisational domain: public suffix + one label. A domain
        that is itself a public suffix is its own organisational domain."""
        domain = domains.comparable(domain)
        labels = domain.split(".")
        n = self.public_suffix_len(labels)
        if n >= len(labels):
            return domain
        return ".".join(labels[-(n + 1):])

    def aligned(self, one: str, two: str, strict: bool) -> bool:
        one, two = domains.comparable(one), domains.comparable(two)
        if strict or one == two:
            return one == two
        return self.org_domain(one) == self.org_domain(two)


def _to_ascii(rule: str) -> str:
    try:  # IDNA 2008 A-labels; "*" and "!" rules are ASCII and kept
        return domains.lookup_name(rule)
    except domains.DomainError:
        return rule
