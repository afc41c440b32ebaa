"""helo -- sanity checks on the HELO/EHLO name.

Checks, grouped by `policy` (each level includes the ones before):
- `lenient`: `bad_helo` (listed names/patterns), `invalid_localhost`
  (`localhost` / `[127.0.0.1]` from a non-loopback client), `is_bare_ip`
  (an IP without the `[ ]` of an address literal), `claims_us` (our own
  `server.me`, or a literal of the IP the client connected to), and
  `is_forged_literal` (a literal that is not the client's IP).
- `rfc`: + `is_not_fqdn` (no dot, or a bad label), `no_forward_dns` (the
  name has no A/AAAA), `no_reverse_dns` (the client IP has no PTR).
- `strict`: + `no_matching_dns` (neither the name's A/AAAA nor the client's
  PTR names tie the name to the client IP).
A temporary DNS failure passes the DNS checks.  Relay clients, authenticated
sessions and `whitelisthost` connections are not checked.  The first failing
check decides; its name is kept in `session.notes["helo_failed"]`.

Options:
- `policy` (`lenient` | `rfc` | `strict`, default `lenient`).
- `bad_helo` (list): names refused (exact, case-insensitive).
- `bad_helo_patterns` (list): regular expressions refused.
- `skip` (list): check names turned off (e.g. `["no_reverse_dns"]`).
- `action` (default `deny`): deny, denysoft, deny_disconnect,
  denysoft_disconnect, naughty, note.
- `message` (default `Invalid HELO/EHLO {helo}: {check}`).
- `nameservers`, `dns_port`, `dns_timeout`, `dns_cache`: see _dns (resolver).

Names are compared as IDNA 2008 A-labels (qsmtp.domains): a `bad_helo`
entry, `server.me` and the PTR names match the HELO name in either form; a
HELO name IDNA 2008 refuses (U+212A KELVIN SIGN, a fake `xn--` label) is
not a FQDN. A `bad_helo` entry that is not a domain is a load error.

qpsmtpd mapping: `helo policy lenient|rfc|strict` -> `policy`;
config/badhelo -> `bad_helo` (regex lines -> `bad_helo_patterns`);
`reject 0|1|naughty` + `reject_type` -> `action`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from qsmtp import domains
from qsmtp.plugins.api import HookReturn, Option, Plugin, PluginError
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin.naughty import ACTIONS, act, trusted

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session


LEVELS = {
    "lenient": ("bad_helo", "invalid_localhost", "is_bare_ip", "claims_us",
                "is_forged_literal"),
    "rfc": ("is_not_fqdn", "no_forward_dns", "no_reverse_dns"),
    "strict": ("no_matching_dns",),
}
ALL_CHECKS = tuple(c for level in LEVELS.values() for c in level)


def _ascii_name(helo: str) -> str | None:
    """The HELO name in A-label form; None when it is not a domain."""
    try:
        return domains.to_ascii(helo)
    except domains.DomainError:
        return None


def _literal(helo: str) -> str | None:
    """The IP inside an address literal ([192.0.2.1], [IPv6:2001:db8::1])."""
    if not (helo.startswith("[") and helo.endswith("]")):
        return None
    inner = helo[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return ""


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


class Helo(Plugin):
    """Checks the HELO/EHLO name by policy level."""

    options = {
        "policy": Option(str, "lenient", "which checks run", choices=tuple(LEVELS)),
        "bad_helo": Option(list, [], "names refused"),
        "bad_helo_patterns": Option(list, [], "regular expressions refused"),
        "skip": Option(list, [], "check names turned off"),
        "action": Option(str, "deny", "what a failing HELO gets", choices=ACTIONS),
        "message": Option(str, "Invalid HELO/EHLO {helo}: {check}", "reply text"),
        **_dns.DNS_OPTIONS,
    }

    def setup(self) -> None:
        unknown = [c for c in self.opts.skip if c not in ALL_CHECKS]
        if unknown:
            raise PluginError(self.name, "skip", f"unknown check(s) {unknown}; "
                              f"known: {', '.join(ALL_CHECKS)}")
        self.checks: list[str] = []
        for level, checks in LEVELS.items():
            self.checks += [c for c in checks if c not in self.opts.skip]
            if level == self.opts.policy:
                break
        self.bad = set()
        for entry in self.opts.bad_helo:
            entry = str(entry)
            if _literal(entry) is not None:
                self.bad.add(entry.lower())
                continue
            name = _ascii_name(entry)
            if name is None:
                raise PluginError(self.name, "bad_helo", f"{entry!r} is not a domain "
                                  "(IDNA 2008) or an address literal")
            self.bad.add(name)
        try:
            self.patterns = [re.compile(p, re.I) for p in self.opts.bad_helo_patterns]
        except re.error as exc:
            raise PluginError(self.name, "bad_helo_patterns", str(exc)) from None
        self.resolver = _dns.make_resolver(self)

    def hook_helo(self, session: Session, host: str) -> HookReturn:
        return self.check(session, host)

    def hook_ehlo(self, session: Session, host: str) -> HookReturn:
        return self.check(session, host)

    def check(self, session: Session, host: str) -> HookReturn:
        if trusted(session) or session.relay_client or session.auth_user:
            return None
        helo = (host or "").strip()
        for name in self.checks:
            try:
                failed = getattr(self, name)(session, helo)
            except _dns.DnsTempError as exc:
                self.log.info("session %s: helo %s: %s", session.id, name, exc)
                failed = False
            if failed:
                session.notes["helo_failed"] = name
                text = self.opts.message.format(helo=helo, check=name.replace("_", " "))
                return act(session, self, self.opts.action, text)
        return None

    # -- the checks: True means the HELO fails ------------------------------
    def bad_helo(self, session: Session, helo: str) -> bool:
        name = helo.lower() if _literal(helo) is not None else _ascii_name(helo)
        forms = {helo, name} if name else {helo}
        return (name in self.bad
                or any(p.search(form) for p in self.patterns for form in forms))

    def invalid_localhost(self, session: Session, helo: str) -> bool:
        if _ascii_name(helo) not in ("localhost", "localhost.localdomain") and \
                _literal(helo) not in ("127.0.0.1", "::1"):
            return False
        return not ipaddress.ip_address(session.conn.peer_ip).is_loopback

    def is_bare_ip(self, session: Session, helo: str) -> bool:
        try:
            ipaddress.ip_address(helo)
            return True
        except ValueError:
            return False

    def claims_us(self, session: Session, helo: str) -> bool:
        if ipaddress.ip_address(session.conn.peer_ip).is_loopback:
            return False
        literal = _literal(helo)
        if literal:
            return _same_ip(literal, session.conn.local_ip)
        me = getattr(getattr(self.config, "server", None), "me", "") or ""
        name = _ascii_name(helo)
        return bool(me) and name is not None and name == _ascii_name(me)

    def is_forged_literal(self, session: Session, helo: str) -> bool:
        literal = _literal(helo)
        if literal is None:
            return False
        return not literal or not _same_ip(literal, session.conn.peer_ip)

    def is_not_fqdn(self, session: Session, helo: str) -> bool:
        if _literal(helo) is not None:
            return False  # literals are judged by the literal checks
        name = _ascii_name(helo)
        if name is None:
            return True  # not a domain under IDNA 2008
        labels = name.split(".")
        return len(labels) < 2 or labels[-1].isdigit()

    def no_forward_dns(self, session: Session, helo: str) -> bool:
        if _literal(helo) is not None:
            return False
        return not self._forward(session, helo)

    def no_reverse_dns(self, session: Session, helo: str) -> bool:
        return not self._reverse(session)

    def no_matching_dns(self, session: Session, helo: str) -> bool:
        if _literal(helo) is not None:
            return False
        name = _ascii_name(helo)
        if any(_same_ip(a, session.conn.peer_ip) for a in self._forward(session, helo)):
            return False
        return name not in self._reverse(session)

    def _forward(self, session: Session, helo: str) -> list[str]:
        cache = session.notes.setdefault("helo_forward", {})
        if helo not in cache:
            cache[helo] = _dns.addresses(self.resolver, helo.rstrip("."))
        return cache[helo]

    def _reverse(self, session: Session) -> list[str]:
        if "reverse_dns" not in session.notes:  # fcrdns may have asked already
            session.notes["reverse_dns"] = _dns.ptr_names(self.resolver,
                                                          session.conn.peer_ip)
        return session.notes["reverse_dns"]
