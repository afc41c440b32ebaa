"""dnsbl -- refuse clients whose IP is on a DNS blocklist.

The client IP is looked up in each zone (`4.3.2.1.zone` A, IPv6 as reversed
nibbles) when the client connects; a listing's TXT record goes into the reply
("Your address 192.0.2.7 is listed in bl.example: see https://...").  The
refusal happens at `stage` (default `rcpt`, as qpsmtpd: the client can still
reach postmaster@ and abuse@, which are never refused here).  Relay clients
and authenticated sessions are not refused; connections marked
`whitelisthost` (hosts_allow, karma) are not even looked up.

Options:
- `zones` (list, required): each entry a zone name, or a table
  `{zone = "bl.example", action = "denysoft", match = ["127.0.0.2"], message = "..."}`;
  `match` limits which A answers count (default: any, except the
  127.255.255.x error answers list operators send).
- `action` (default `deny`): for zones that don't set one; `deny`,
  `denysoft`, `deny_disconnect`, `denysoft_disconnect`, `naughty` (flag for
  the naughty plugin) or `note` (log only).
- `stage` (`connect` | `mail` | `rcpt`, default `rcpt`): when to refuse.
- `allow` (list of CIDR): clients never looked up (qpsmtpd's dnsbl_allow).
- `message` (default `Your address {ip} is listed in {zone}{txt}`): reply
  text; `{txt}` is `: <TXT record>` when the list publishes one.
- `nameservers`, `dns_port`, `dns_timeout`, `dns_cache`: see _dns (resolver).

qpsmtpd mapping: config/dnsbl_zones (`zone` or `zone ip`) -> `zones`
(`{zone=..., match=[ip]}`); config/dnsbl_allow -> `allow`;
config/dnsbl_rejectmsg -> `message`; `reject 1|0|naughty` + `reject_type
perm|temp|disconnect` -> `action = deny|note|naughty|denysoft|deny_disconnect`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsmtp.plugins.api import HookReturn, Option, Params, Plugin, PluginError
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin.naughty import ACTIONS, act, trusted

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session


EXEMPT_LOCALS = ("postmaster", "abuse")


class Dnsbl(Plugin):
    """Refuses clients listed on DNS blocklists (IP-based)."""

    options = {
        "zones": Option(list, [], "DNS lists: names or {zone, action, match, message}"),
        "action": Option(str, "deny", "what a listing does", choices=ACTIONS),
        "stage": Option(str, "rcpt", "when to refuse", choices=("connect", "mail", "rcpt")),
        "allow": Option(list, [], "client networks never looked up"),
        "message": Option(str, "Your address {ip} is listed in {zone}{txt}", "reply text"),
        **_dns.DNS_OPTIONS,
    }

    def setup(self) -> None:
        if not self.opts.zones:
            raise PluginError(self.name, "zones", "at least one zone is required")
        self.zones = _dns.parse_zones(self.name, self.opts.zones, self.opts.action, ACTIONS)
        self.allow = _dns.parse_networks(self.name, "allow", self.opts.allow)
        self.resolver = _dns.make_resolver(self)
        try:
            self.opts.message.format(ip="", zone="", txt="")
        except (KeyError, IndexError, ValueError) as exc:
            raise PluginError(self.name, "message", f"bad placeholder: {exc}") from None

    def lookup(self, ip: str) -> _dns.Listing | None:
        try:
            prefix = _dns.reversed_ip(ip)
        except ValueError:
            return None
        return _dns.check_zones(self.resolver, prefix, self.zones, self.log)

    def hook_connect(self, session: Session) -> HookReturn:
        ip = session.conn.peer_ip
        if trusted(session) or _dns.ip_in(ip, self.allow):
            return None
        listing = self.lookup(ip)
        if listing is None:
            return None
        session.notes["dnsbl"] = listing
        self.log.info("session %s: %s listed in %s (%s)", session.id, ip,
                      listing.zone.zone, listing.answers[0])
        if listing.zone.action in ("naughty", "note") or self.opts.stage == "connect":
            return self.refuse(session, listing)
        return None

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> HookReturn:
        return self._at(session, "mail")

    def hook_rcpt(self, session: Session, recipient: Address, params: Params) -> HookReturn:
        if recipient.local_unquoted.lower() in EXEMPT_LOCALS:
            return None
        return self._at(session, "rcpt")

    def _at(self, session: Session, stage: str) -> HookReturn:
        listing = session.notes.get("dnsbl")
        if (listing is None or self.opts.stage != stage or trusted(session)
                or listing.zone.action in ("naughty", "note")
                or session.relay_client or session.auth_user):
            return None
        return self.refuse(session, listing)

    def refuse(self, session: Session, listing: _dns.Listing) -> HookReturn:
        template = listing.zone.message or self.opts.message
        text = template.format(ip=session.conn.peer_ip, zone=listing.zone.zone,
                               txt=f": {listing.txt}" if listing.txt else "")
        return act(session, self, listing.zone.action, text)
