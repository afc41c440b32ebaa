"""rhsbl -- refuse senders whose domain is on a right-hand-side blocklist.

At MAIL, the sender's domain (and, with `check_helo`, the HELO name) is
looked up in each zone (`domain.zone` A); a listing refuses the MAIL with the
list's TXT record in the reply.  The null sender, relay clients,
authenticated sessions and `whitelisthost` connections are not checked.

Options:
- `zones` (list, required): zone names or tables
  `{zone = "rhs.example", action = "denysoft", match = ["127.0.0.2"], message = "..."}`.
- `action` (default `deny`): default for zones; deny, denysoft,
  deny_disconnect, denysoft_disconnect, naughty, note.
- `check_helo` (bool, default false): also look up the HELO/EHLO name.
- `allow` (list of domains): never looked up (the domain and its subdomains).
- `message` (default `{what} {domain} is listed in {zone}{txt}`): reply text.
- `nameservers`, `dns_port`, `dns_timeout`, `dns_cache`: see _dns (resolver).

Domains are looked up and compared as IDNA 2008 A-labels (qsmtp.domains):
`weiß.test` is asked as `xn--wei-7ka.test.<zone>`, never as `weiss.test`; an
`allow` entry matches in either form; a HELO name that is not a valid domain
is not looked up.

qpsmtpd mapping: config/rhsbl_zones (`zone message`) -> `zones`
(`{zone=..., message=...}`); config/rhsbl_allow -> `allow`; `reject` +
`reject_type` -> `action`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsmtp import domains
from qsmtp.plugins.api import HookReturn, Option, Params, Plugin, PluginError
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin.naughty import ACTIONS, act, trusted

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session



class Rhsbl(Plugin):
    """Refuses senders (and optionally HELO names) listed on domain blocklists."""

    options = {
        "zones": Option(list, [], "DNS lists: names or {zone, action, match, message}"),
        "action": Option(str, "deny", "what a listing does", choices=ACTIONS),
        "check_helo": Option(bool, False, "also check the HELO name"),
        "allow": Option(list, [], "domains never looked up"),
        "message": Option(str, "{what} {domain} is listed in {zone}{txt}", "reply text"),
        **_dns.DNS_OPTIONS,
    }

    def setup(self) -> None:
        if not self.opts.zones:
            raise PluginError(self.name, "zones", "at least one zone is required")
        self.zones = _dns.parse_zones(self.name, self.opts.zones, self.opts.action, ACTIONS)
        try:
            self.allow = domains.DomainSet((str(d).strip(".") for d in self.opts.allow),
                                           subdomains=True)
        except domains.DomainError as exc:
            raise PluginError(self.name, "allow", str(exc)) from None
        self.resolver = _dns.make_resolver(self)

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> HookReturn:
        if trusted(session) or session.relay_client or session.auth_user:
            return None
        candidates = []
        if sender is not None and sender.domain and not sender.domain.startswith("["):
            candidates.append(("Sender domain", sender.domain))
        if self.opts.check_helo and session.helo_host and "." in session.helo_host:
            candidates.append(("HELO name", session.helo_host.strip("[]")))
        for what, name in candidates:
            try:
                domain = domains.to_ascii(name)
            except domains.DomainError:
                continue  # not a domain (a junk HELO): nothing to look up
            if domain in self.allow:
                continue
            listing = _dns.check_zones(self.resolver, domain, self.zones, self.log)
            if listing is not None:
                session.notes["rhsbl"] = listing
                template = listing.zone.message or self.opts.message
                text = template.format(what=what, domain=domain, zone=listing.zone.zone,
                                       txt=f": {listing.txt}" if listing.txt else "")
                return act(session, self, listing.zone.action, text)
        return None
