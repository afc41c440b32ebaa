"""hosts_allow -- allow or refuse clients by network, before anything else.

The most specific matching network wins (longest prefix; on a tie, deny).
A denied client gets `554 5.7.1 <message>` at connect and is disconnected.
An allowed client goes on as usual; with `whitelist = true` it is also
marked `whitelisthost`, so dnsbl, rhsbl, helo, fcrdns, earlytalker,
resolvable_fromhost, greylisting and karma skip it.  A client matching
nothing gets `default`.  The per-IP concurrency limit that qpsmtpd's
hosts_allow enforced lives in the worker: `server.max_from_ip` (atomic in the
registry), so this plugin has no connection counting of its own.

Options:
- `allow` (list of CIDR): networks allowed.
- `deny` (list of CIDR): networks refused.
- `rules` (list of qpsmtpd lines `CIDR +` (allow) or `CIDR message` (deny with
  that message)): for migration; merged with `allow`/`deny`.
- `default` (`allow` | `deny`, default `allow`): for clients matching nothing
  (`deny` makes an allow-list, e.g. for a submission-only service).
- `whitelist` (bool, default false): mark allowed networks `whitelisthost`.
- `message` (default `Your host is not allowed to connect`).

qpsmtpd mapping: config/hosts_allow -> `rules` (same lines), or split into
`allow` (the `+` lines) and `deny`; `-m/--max-from-ip` -> `server.max_from_ip`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qsmtp.plugins.api import DENY_DISCONNECT, HookReturn, Option, Plugin, PluginError
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin.naughty import with_code

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session



class HostsAllow(Plugin):
    """Allows or refuses clients by CIDR lists (longest prefix wins)."""

    options = {
        "allow": Option(list, [], "networks allowed"),
        "deny": Option(list, [], "networks refused"),
        "rules": Option(list, [], "qpsmtpd hosts_allow lines: 'CIDR +' or 'CIDR message'"),
        "default": Option(str, "allow", "for clients matching nothing", choices=("allow", "deny")),
        "whitelist": Option(bool, False, "mark allowed clients whitelisthost"),
        "message": Option(str, "Your host is not allowed to connect", "reply text"),
    }

    def setup(self) -> None:
        # (network, allowed?, message)
        self.table: list[tuple[Any, bool, str]] = []
        for net in _dns.parse_networks(self.name, "allow", self.opts.allow):
            self.table.append((net, True, ""))
        for net in _dns.parse_networks(self.name, "deny", self.opts.deny):
            self.table.append((net, False, self.opts.message))
        for line in self.opts.rules:
            if not isinstance(line, str) or not line.strip():
                raise PluginError(self.name, "rules", f"{line!r}: want 'CIDR +' or 'CIDR msg'")
            cidr, _, rest = line.strip().partition(" ")
            net = _dns.parse_networks(self.name, "rules", [cidr])[0]
            rest = rest.strip()
            self.table.append((net, rest == "+", rest if rest not in ("", "+")
                               else self.opts.message))
        # Most specific first; deny before allow on equal prefixes.
        self.table.sort(key=lambda row: (-row[0].prefixlen, row[1]))

    def decide(self, ip: str) -> tuple[bool, str]:
        for net, allowed, message in self.table:
            if _dns.ip_in(ip, [net]):
                return allowed, message
        return self.opts.default == "allow", self.opts.message

    def hook_connect(self, session: Session) -> HookReturn:
        allowed, message = self.decide(session.conn.peer_ip)
        if not allowed:
            self.log.info("session %s: %s refused", session.id, session.conn.peer_ip)
            return DENY_DISCONNECT, with_code("5.7.1", message)
        if self.opts.whitelist and any(_dns.ip_in(session.conn.peer_ip, [n])
                                       for n, ok, _ in self.table if ok):
            session.notes["whitelisthost"] = self.name
        return None
