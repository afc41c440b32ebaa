"""greylisting -- temporarily refuse unknown (client IP, sender, recipient)
triplets; real MTAs retry, most spam engines don't.

A new triplet is refused with `450 4.7.1` and recorded.  Retries within
`black_timeout` are refused again; the first retry after it (and before
`grey_timeout`) passes and whitelists the triplet for `white_timeout`, which
every further pass extends.  Expired records start over.  With
`deny_late = true` the refusal is given at DATA (once, for the whole
envelope) instead of at each RCPT.

The triplets live in the `[state]` store.  With `backend = "sqlite"` (the
default) an SQLite file (WAL) shared by the workers of this host: each check
is one `BEGIN IMMEDIATE` read-modify-write.  With `backend = "redis"` one
hash per triplet in Redis, shared by every host (a triplet greylisted on one
host passes on another after the delay): each check is one atomic script,
and records expire by TTL (`grey_timeout` while new, `white_timeout` after a
pass).  Concurrent workers never lose an update either way.  When the store
is unavailable or stays locked the mail passes (fail open) and a log line
says so - never a "database is locked" to a client.

Skipped: relay clients, authenticated sessions, `whitelisthost`
connections, `whitelist_ips`, `whitelist_senders`, `whitelist_rcpts`.

Options:
- `db_path` (default `<server.state_dir>/greylisting.sqlite`; sqlite backend).
- `black_timeout` (seconds, default 3000 = 50 min).
- `grey_timeout` (seconds, default 12000 = 3 h 20 min).
- `white_timeout` (seconds, default 3110400 = 36 days).
- `mode` (`denysoft` | `testonly` | `off`, default `denysoft`): testonly logs only.
- `remote_ip`, `sender`, `recipient` (bool, default all true): the triplet parts.
- `ipv4_prefix` (int 8..32, default 32): treat an IPv4 network as one client
  (24 suits sender farms that retry from another address).
- `deny_late` (bool, default false).
- `whitelist_ips` (CIDR list), `whitelist_senders`, `whitelist_rcpts`
  (`user@domain` or `@domain` lists).

qpsmtpd mapping: same option names for black_timeout, grey_timeout,
white_timeout, mode, remote_ip, sender, recipient, deny_late; `db_dir DIR` ->
`db_path = "DIR/greylisting.sqlite"`; config/greylist_whitelist... files ->
the whitelist lists.  qpsmtpd's default triplet was the IP alone
(`sender 0 recipient 0`); qsmtp's default is the full triplet.  p0f and geoip
options are not carried over.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import time
from typing import TYPE_CHECKING

from qsmtp.plugins.api import (
    DENYSOFT,
    HookReturn,
    Option,
    Params,
    Plugin,
    PluginError,
    transaction_of,
)
from qsmtp.plugins.builtin import _dns
from qsmtp.plugins.builtin.badmailfrom import AddressList
from qsmtp.plugins.builtin.naughty import trusted
from qsmtp.state import GreyRules, StateUnavailable, grey_store, sqlite_path

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session


MESSAGE = "4.7.1 This mail is temporarily denied (greylisted), please try again later"
PURGE_CHANCE = 0.01


class Greylisting(Plugin):
    """Temporarily refuses unknown triplets; state shared by all workers (and hosts)."""

    options = {
        "db_path": Option(str, "", "SQLite file; default <state_dir>/greylisting.sqlite"),
        # upper bounds: a year; triplets are kept that long, the store grows
        "black_timeout": Option(int, 3000, "seconds a new triplet stays refused",
                                bounds=(1, 365 * 86400)),
        "grey_timeout": Option(int, 12000, "seconds a new triplet may take to retry",
                               bounds=(1, 365 * 86400)),
        "white_timeout": Option(int, 3110400, "seconds a passed triplet stays known",
                                bounds=(1, 365 * 86400)),
        "mode": Option(str, "denysoft", "denysoft, testonly or off",
                       choices=("denysoft", "testonly", "off")),
        "remote_ip": Option(bool, True, "client IP is part of the key"),
        "sender": Option(bool, True, "sender is part of the key"),
        "recipient": Option(bool, True, "recipient is part of the key"),
        "ipv4_prefix": Option(int, 32, "IPv4 prefix length treated as one client"),
        "deny_late": Option(bool, False, "refuse at DATA instead of RCPT"),
        "whitelist_ips": Option(list, [], "client networks never greylisted"),
        "whitelist_senders": Option(list, [], "user@domain or @domain"),
        "whitelist_rcpts": Option(list, [], "user@domain or @domain"),
    }

    def setup(self) -> None:
        o = self.opts
        if not 0 < o.black_timeout < o.grey_timeout:
            raise PluginError(self.name, "black_timeout", "must be > 0 and < grey_timeout")
        if not 8 <= o.ipv4_prefix <= 32:
            raise PluginError(self.name, "ipv4_prefix", "must be 8..32")
        if not (o.remote_ip or o.sender or o.recipient):
            raise PluginError(self.name, "remote_ip", "the key needs at least one part")
        self.nets = _dns.parse_networks(self.name, "whitelist_ips", o.whitelist_ips)
        # Domains compared as IDNA 2008 A-labels, as in badmailfrom.
        self.senders = AddressList(self.name, o.whitelist_senders, [])
        self.rcpts = AddressList(self.name, o.whitelist_rcpts, [])
        self.rules = GreyRules(o.black_timeout, o.grey_timeout, o.white_timeout)
        self.store = grey_store(self.config, sqlite_path(
            self.config, o.db_path, "greylisting.sqlite"))
        self.clock = time.time

    # -- the state machine: one atomic step in the store per check ------------
    def check(self, key: str) -> bool:
        """True when the triplet may pass now. Raises StateUnavailable."""
        now = self.clock()
        passed = self.store.check(key, now, self.rules)
        if random.random() < PURGE_CHANCE:
            try:
                self.store.purge(now, self.rules)
            except StateUnavailable as exc:
                self.log.warning("greylisting purge skipped: %s", exc)
        return passed

    # -- hooks -----------------------------------------------------------
    def key(self, session: Session, recipient: Address) -> str:
        parts = []
        if self.opts.remote_ip:
            parts.append(self._client(session.conn.peer_ip))
        if self.opts.sender:
            sender = session.transaction.sender if session.transaction else None
            parts.append(sender.address.lower() if sender is not None else "")
        if self.opts.recipient:
            parts.append(recipient.address.lower())
        # Hashed: fixed-size keys, and no addresses in clear in the db file.
        return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()

    def _client(self, ip: str) -> str:
        addr = ipaddress.ip_address(ip)
        if addr.version == 4 and self.opts.ipv4_prefix < 32:
            return str(ipaddress.ip_network(f"{ip}/{self.opts.ipv4_prefix}", strict=False))
        return str(addr)

    def exempt(self, session: Session, recipient: Address) -> bool:
        if (self.opts.mode == "off" or trusted(session) or session.relay_client
                or session.auth_user or _dns.ip_in(session.conn.peer_ip, self.nets)):
            return True
        sender = session.transaction.sender if session.transaction else None
        if sender is not None and self.senders.match(sender)[0]:
            return True
        return self.rcpts.match(recipient)[0]

    def hook_rcpt(self, session: Session, recipient: Address, params: Params) -> HookReturn:
        if self.exempt(session, recipient):
            return None
        try:
            passed = self.check(self.key(session, recipient))
        except StateUnavailable as exc:
            self.log.error("greylisting store unavailable, mail passes: %s", exc)
            return None
        if passed:
            return None
        self.log.info("session %s: greylisted %s -> %s", session.id, session.conn.peer_ip,
                      recipient.address)
        if self.opts.mode == "testonly":
            return None
        if self.opts.deny_late:
            transaction_of(session).notes["greylisted"] = True
            return None
        return DENYSOFT, MESSAGE

    def hook_data(self, session: Session) -> HookReturn:
        txn = session.transaction
        if txn is not None and txn.notes.get("greylisted"):
            return DENYSOFT, MESSAGE
        return None

