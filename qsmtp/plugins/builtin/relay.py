"""relay -- who may send mail where (implied when `[relay]` is in the config).

Reads `[relay] clients` (networks that may relay to any domain) and
`[relay] domains` (domains we accept mail for; `.example.test` matches
example.test and every subdomain, `example.test` matches only itself).
It has no options of its own.

Decisions at RCPT (fail closed; refusals are `550 5.7.1 Relaying denied`):
- `<postmaster>` without a domain, any case: accepted from everyone
  (RFC 5321 4.5.1).  Any other recipient without a domain: refused, even
  from relay clients (there is nowhere to deliver it).
- Relay clients (peer in `clients`, or an authenticated session): accepted.
- Everyone else: the domain must be one of ours, and the address must not
  carry a routing trick aimed at one of our domains: a local part (quoted or
  not) containing `@`, `%` or `!`, a source route (`<@ours:u@foreign>`, any
  route at all), or an address literal (`u@[192.0.2.1]`).
Domain comparison (qsmtp.domains): as A-labels, under IDNA 2008, so
`straße.test` configured matches `xn--strae-oqa.test` sent and the other way
round; case-insensitive in ASCII; one trailing dot (the absolute form of the
same name) is ignored.  Nothing is mapped: `strasse.test` is not
`straße.test`, and U+212A KELVIN SIGN is not `k`.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from qsmtp import domains
from qsmtp.plugins.api import DENY, OK, HookReturn, Params, Plugin
from qsmtp.plugins.builtin._dns import ip_in

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session


REFUSED = (DENY, "5.7.1 Relaying denied")
ACCEPTED = (OK, None)
_ROUTING_CHARS = frozenset("@%!")
_IP_CACHE = 4096  # peers remembered per worker; cleared when full


class Relay(Plugin):
    """Relay control from `[relay] clients` and `[relay] domains` (no options)."""

    budgeted = False  # table lookups in memory: nothing a timer could cut short

    def setup(self) -> None:
        relay = self.config.relay
        self.networks = [ipaddress.ip_network(n, strict=False) for n in relay.clients]
        # Already validated by settings (exit 78 for a bad entry).
        self.domains = domains.DomainSet(relay.domains)
        self._client_ips: dict[str, bool] = {}  # peer IP -> verdict (parsing costs ~20 us)

    def hook_connect(self, session: Session) -> HookReturn:
        if not session.relay_client and self.is_client_ip(session.conn.peer_ip):
            session.relay_client = True
        return None

    def hook_rcpt(self, session: Session, recipient: Address, params: Params) -> HookReturn:
        return self.decide(recipient, session.relay_client or bool(session.auth_user))

    def is_client_ip(self, ip: str) -> bool:
        known = self._client_ips.get(ip)
        if known is None:
            if len(self._client_ips) >= _IP_CACHE:
                self._client_ips.clear()
            known = self._client_ips[ip] = ip_in(ip, self.networks)
        return known

    def decide(self, rcpt: Address, client: bool) -> HookReturn:
        if rcpt.domain is None:
            if rcpt.local_unquoted.lower() == "postmaster" and not rcpt.route:
                return ACCEPTED
            return REFUSED
        if client:
            return ACCEPTED
        if rcpt.route or _ROUTING_CHARS.intersection(rcpt.local_unquoted):
            return REFUSED
        return ACCEPTED if self.is_ours(rcpt.domain) else REFUSED

    def is_ours(self, domain: str) -> bool:
        return domain in self.domains  # an address literal is never ours
