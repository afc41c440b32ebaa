"""fcrdns -- forward-confirmed reverse DNS of the client.

At connect: the client IP's PTR names are looked up, and each name's A/AAAA;
the connection is forward-confirmed when one of those names resolves back to
the client IP.  Results go into `session.notes`: `reverse_dns` (the PTR
names), `fcrdns` (the confirmed name, or None), and `session.remote_host`
becomes the confirmed name (used by Received:) unless already set.

A connection that is not confirmed gets `action` at MAIL (by then relay
clients and authenticated users are known, and are exempt, like
`whitelisthost` ones).  A temporary DNS failure never refuses.

Options:
- `action` (default `note`): note (log only), naughty, deny, denysoft,
  deny_disconnect, denysoft_disconnect.
- `require` (`fcrdns` | `ptr`, default `fcrdns`): what counts as passing:
  a forward-confirmed name, or merely any PTR record.
- `max_names` (int, default 8): PTR names followed at most.
- `message` (default `Your IP {ip} has no forward-confirmed reverse DNS`).
- `nameservers`, `dns_port`, `dns_timeout`, `dns_cache`: see _dns (resolver).

qpsmtpd mapping: `fcrdns reject 0|1|naughty` + `reject_type` -> `action`;
qpsmtpd's `has_reverse_dns` note -> `session.notes["reverse_dns"]`.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from qsmtp.plugins.api import HookReturn, Option, Params, Plugin
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin.naughty import ACTIONS, act, trusted

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session



class Fcrdns(Plugin):
    """Forward-confirmed reverse DNS: notes it, optionally refuses without it."""

    options = {
        "action": Option(str, "note", "what an unconfirmed client gets", choices=ACTIONS),
        "require": Option(str, "fcrdns", "what passes", choices=("fcrdns", "ptr")),
        "max_names": Option(int, 8, "PTR names followed at most", bounds=(1, 100)),
        "message": Option(str, "Your IP {ip} has no forward-confirmed reverse DNS",
                          "reply text"),
        **_dns.DNS_OPTIONS,
    }

    def setup(self) -> None:
        self.resolver = _dns.make_resolver(self)

    def confirm(self, ip: str) -> tuple[list[str], str | None]:
        """(PTR names, the first name resolving back to ip). DnsTempError passes up."""
        names = _dns.ptr_names(self.resolver, ip)
        want = ipaddress.ip_address(ip)
        for name in names[: self.opts.max_names]:
            for answer in _dns.addresses(self.resolver, name):
                if ipaddress.ip_address(answer) == want:
                    return names, name
        return names, None

    def hook_connect(self, session: Session) -> HookReturn:
        if trusted(session):
            return None
        try:
            names, confirmed = self.confirm(session.conn.peer_ip)
        except DnsError as exc:
            self.log.info("session %s: fcrdns lookup failed: %s", session.id, exc)
            session.notes["fcrdns_tempfail"] = True
            return None
        session.notes["reverse_dns"] = names
        session.notes["fcrdns"] = confirmed
        if confirmed and not session.remote_host:
            session.remote_host = confirmed
        return None

    def passed(self, session: Session) -> bool:
        if session.notes.get("fcrdns_tempfail"):
            return True
        if self.opts.require == "ptr":
            return bool(session.notes.get("reverse_dns"))
        return bool(session.notes.get("fcrdns"))

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> HookReturn:
        if (trusted(session) or session.relay_client or session.auth_user
                or "fcrdns" not in session.notes or session.notes.get("fcrdns_acted")):
            return None
        if self.passed(session):
            return None
        session.notes["fcrdns_acted"] = True  # once per connection, not per MAIL
        text = self.opts.message.format(ip=session.conn.peer_ip)
        result = act(session, self, self.opts.action, text)
        if isinstance(result, tuple):
            session.notes["fcrdns_acted"] = False  # a refusal holds for every MAIL
        return result


DnsError = (_dns.DnsTempError, ValueError)
