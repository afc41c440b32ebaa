"""resolvable_fromhost -- the sender's domain must be able to receive mail.

At MAIL, the sender domain must have an MX whose host has a usable address,
or (no MX at all) an A/AAAA record itself (the implicit MX of RFC 5321 5.1).
Addresses in `invalid_networks` don't count (a domain whose only MX is
127.0.0.1 can't take a bounce).  A null MX (`MX 0 .`, RFC 7505) says the
domain sends no mail: refused.  The null sender `<>`, address literals,
relay clients, authenticated sessions and `whitelisthost` connections are
not checked.

Options:
- `action` (default `deny`): for a domain that does not resolve: deny,
  denysoft, deny_disconnect, denysoft_disconnect, naughty, note.
- `temp_action` (default `denysoft`): when DNS can't answer right now.
- `invalid_networks` (list of CIDR, default 0.0.0.0/8, 127.0.0.0/8,
  224.0.0.0/4, 240.0.0.0/4, ::/128, ::1/128, ff00::/8).
- `message` (default `Sender domain {domain} does not resolve`).
- `nameservers`, `dns_port`, `dns_timeout`, `dns_cache`: see _dns (resolver).

qpsmtpd mapping: `reject 0|1|naughty` + `reject_type perm|temp` -> `action`;
config/invalid_resolvable_fromhost -> `invalid_networks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsmtp.plugins.api import HookReturn, Option, Params, Plugin
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin.naughty import ACTIONS, act, trusted

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session


INVALID = ["0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4",
           "::/128", "::1/128", "ff00::/8"]
MAX_MX = 10


class ResolvableFromhost(Plugin):
    """Refuses senders whose domain has no usable MX or address."""

    options = {
        "action": Option(str, "deny", "for a domain that does not resolve", choices=ACTIONS),
        "temp_action": Option(str, "denysoft", "when DNS fails for now", choices=ACTIONS),
        "invalid_networks": Option(list, INVALID, "addresses that don't count"),
        "message": Option(str, "Sender domain {domain} does not resolve", "reply text"),
        **_dns.DNS_OPTIONS,
    }

    def setup(self) -> None:
        self.invalid = _dns.parse_networks(self.name, "invalid_networks",
                                           self.opts.invalid_networks)
        self.resolver = _dns.make_resolver(self)

    def usable(self, answers: list[str]) -> bool:
        return any(not _dns.ip_in(a, self.invalid) for a in answers)

    def resolves(self, domain: str) -> str:
        """'ok', 'nullmx' or 'none'; DnsTempError when DNS can't tell."""
        mx = _dns.query(self.resolver, domain, "MX")
        if mx:
            hosts = sorted((int(r.split()[0]), r.split()[1].rstrip(".")) for r in mx)
            if any(host == "" for _, host in hosts):  # "MX 0 ." (RFC 7505)
                return "nullmx"
            temp = None
            for _, host in hosts[:MAX_MX]:
                try:
                    if self.usable(_dns.addresses(self.resolver, host)):
                        return "ok"
                except _dns.DnsTempError as exc:
                    temp = exc  # another MX may still answer
            if temp is not None:
                raise temp
            return "none"
        return "ok" if self.usable(_dns.addresses(self.resolver, domain)) else "none"

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> HookReturn:
        if (sender is None or sender.is_null or not sender.domain or trusted(session)
                or session.relay_client or session.auth_user):
            return None
        domain = sender.ascii_domain  # IDNA 2008 A-label (qsmtp.domains)
        if domain is None or domain.startswith("["):
            return None
        try:
            verdict = self.resolves(domain)
        except _dns.DnsTempError as exc:
            self.log.info("session %s: %s: %s", session.id, domain, exc)
            return act(session, self, self.opts.temp_action,
                       f"Temporary failure resolving sender domain {domain}")
        if verdict == "ok":
            return None
        text = self.opts.message.format(domain=domain)
        if verdict == "nullmx":
            text = f"Sender domain {domain} does not accept mail (null MX)"
        session.notes["resolvable_fromhost"] = verdict
        return act(session, self, self.opts.action, text)
