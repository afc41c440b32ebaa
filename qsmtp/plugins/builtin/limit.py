"""limit -- per-client-IP limits shared by every host using the same
`[state]` store (Haraka's `limit` is the model).

With `[state] backend = "redis"` the counts are cluster-wide: a client that
spreads its connections over several hosts behind a load balancer gets the
limit once, not once per host.  With the default `sqlite` backend they are
shared by the workers of this host.  `[server] max_from_ip` (the registry's
per-host check) stays the fast first gate in front of this plugin.

- `concurrency` (int, default 0 = off): sessions open at once per client IP.
  Over it: `421 4.7.0` before the greeting, and the connection closes.
- `connection_rate` (`"N/T"`, e.g. `"30/60s"`, default off): connections
  accepted per client IP in any window of T (`s`, `m`, `h` or `d`; seconds
  without a unit).  Over it: `421 4.7.0` at connect.  Refused connections
  do not count.
- `recipient_rate` (`"N/T"`, default off): RCPT commands per client IP in
  any window of T that reach this plugin.  Over it: `450 4.7.1` at RCPT
  (list `limit` first in `[[plugins]]` to count every RCPT).
- `lease` (seconds, default 600): a session's place in the concurrency count
  is renewed at each command and expires `lease` seconds after the last
  one.  It is given back at the end of every session; when a worker or a
  whole host dies, its sessions stop counting after `lease` seconds at most.
- `whitelist_ips` (CIDR list): clients never limited.

Bounds: `concurrency` and N at most 100000, T at most 7 days, `lease` at
most 86400 (each accepted connection or RCPT is stored until its window
ends).

The windows slide (each accepted connection or recipient counts for exactly
T seconds), and every check is one atomic step in the store, so concurrent
workers on several hosts never let more through than the limit.

When the store is unreachable the plugin fails OPEN: the client is let in
and one line is logged (`[server] max_from_ip` still applies).  A limit
exists to keep one client from hogging the service; refusing every client
because the store is down would do that to all of them.

`qsmtpctl status` shows the store's counts for each client IP connected to
this host (`cluster` column; `peers_cluster` in `--json`) when
`[state] backend = "redis"`.

Haraka mapping: `concurrency.max` -> `concurrency`, `rate_conn` ->
`connection_rate`, `rate_rcpt_host` -> `recipient_rate`.
"""

from __future__ import annotations

import os
import re
import socket
import time
from typing import TYPE_CHECKING, Any

from qsmtp.plugins.api import (
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    HookReturn,
    Option,
    Params,
    Plugin,
    PluginError,
)
from qsmtp.plugins.builtin import _dns
from qsmtp.state import StateUnavailable
from qsmtp.state.clientlimits import CONNECTIONS, RECIPIENTS, SESSIONS, stores

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session


RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([smhd]?)\s*$")
UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Upper bounds: every accepted connection / RCPT is one stored member until
# its window ends, so N bounds the memory one client IP can take.
MAX_COUNT, MAX_WINDOW, MAX_LEASE = 100_000, 7 * 86400, 86400
NOTE = "limit_member"  # session.notes: our member in the sessions set


def parse_rate(plugin: str, key: str, text: str) -> tuple[int, int] | None:
    """"30/60s" -> (30, 60); "" -> None (off)."""
    if not text:
        return None
    match = RATE.match(text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise PluginError(plugin, key, f'must be "N/T" like "30/60s" (got {text!r})')
    count, window = int(match[1]), int(match[2]) * UNIT[match[3]]
    if count > MAX_COUNT or window > MAX_WINDOW:
        raise PluginError(plugin, key, f"N must be at most {MAX_COUNT} and T at most "
                                       f"{MAX_WINDOW // 86400}d (got {text!r})")
    return count, window


class Limit(Plugin):
    """Concurrency and rates per client IP, across all hosts sharing the state."""

    options = {
        "concurrency": Option(int, 0, "sessions at once per client IP; 0 = off"),
        "connection_rate": Option(str, "", 'connections per client IP, "N/T" ("30/60s")'),
        "recipient_rate": Option(str, "", 'RCPTs per client IP, "N/T" ("100/1h")'),
        "lease": Option(int, 600, "seconds a silent session keeps its place"),
        "whitelist_ips": Option(list, [], "client networks never limited"),
    }

    def setup(self) -> None:
        if not 0 <= self.opts.concurrency <= MAX_COUNT:
            raise PluginError(self.name, "concurrency", f"must be 0..{MAX_COUNT}")
        if not 1 <= self.opts.lease <= MAX_LEASE:
            raise PluginError(self.name, "lease", f"must be 1..{MAX_LEASE}")
        self.conn_rate = parse_rate(self.name, "connection_rate", self.opts.connection_rate)
        self.rcpt_rate = parse_rate(self.name, "recipient_rate", self.opts.recipient_rate)
        self.nets = _dns.parse_networks(self.name, "whitelist_ips", self.opts.whitelist_ips)
        self.stores = stores(self.config)
        self.host = socket.gethostname()
        self.clock = time.time

    # -- connect: concurrency, then the connection rate --------------------------
    def hook_connect(self, session: Session) -> HookReturn:
        ip = session.conn.peer_ip
        if _dns.ip_in(ip, self.nets):
            return None
        try:
            return self._admit(session, ip, self.clock())
        except StateUnavailable as exc:
            self.log.error("limit store unavailable, %s not limited: %s", ip, exc)
            return None

    def _admit(self, session: Session, ip: str, now: float) -> HookReturn:
        # Unique across hosts and sessions (a session id is unique per worker only).
        member = f"{self.host}:{session.id}:{os.urandom(16).hex()}"
        if self.opts.concurrency:
            added, count = self.stores[SESSIONS].acquire(
                ip, member, now, now + self.opts.lease, self.opts.concurrency)
            if not added:
                return self._refuse(session, ip, f"{count} sessions open", DENYSOFT_DISCONNECT,
                                    "4.7.0 Too many concurrent connections from your IP")
            session.notes[NOTE] = (member, now)
        if self.conn_rate:
            limit, window = self.conn_rate
            added, count = self.stores[CONNECTIONS].acquire(ip, member, now, now + window,
                                                            limit)
            if not added:
                self._release(session)
                return self._refuse(session, ip, f"{count} connections in {window}s",
                                    DENYSOFT_DISCONNECT,
                                    "4.7.0 Connection rate limit exceeded, try later")
        return None

    def _refuse(self, session: Session, ip: str, why: str, result: Any, message: str) -> HookReturn:
        self.log.info("session %s: %s refused by limit (%s)", session.id, ip, why)
        return result, message

    # -- the session is alive: renew its place now and then ------------------------
    def _renew(self, session: Session) -> None:
        held = session.notes.get(NOTE)
        now = self.clock()
        if held is None or now - held[1] < self.opts.lease / 4:
            return
        try:
            self.stores[SESSIONS].renew(session.conn.peer_ip, held[0], now,
                                        now + self.opts.lease)
            session.notes[NOTE] = (held[0], now)
        except StateUnavailable as exc:
            self.log.warning("limit store unavailable, session not renewed: %s", exc)

    def hook_helo(self, session: Session, host: str) -> None:
        self._renew(session)

    def hook_ehlo(self, session: Session, host: str) -> None:
        self._renew(session)

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> None:
        self._renew(session)

    def hook_data_post(self, session: Session) -> None:
        self._renew(session)

    def hook_rcpt(self, session: Session, recipient: Address, params: Params) -> HookReturn:
        self._renew(session)
        if not self.rcpt_rate or _dns.ip_in(session.conn.peer_ip, self.nets):
            return None
        limit, window = self.rcpt_rate
        now = self.clock()
        member = f"{self.host}:{os.urandom(16).hex()}"
        try:
            added, count = self.stores[RECIPIENTS].acquire(
                session.conn.peer_ip, member, now, now + window, limit)
        except StateUnavailable as exc:
            self.log.error("limit store unavailable, recipient not limited: %s", exc)
            return None
        if added:
            return None
        return self._refuse(session, session.conn.peer_ip,
                            f"{count} recipients in {window}s", DENYSOFT,
                            "4.7.1 Recipient rate limit exceeded, try later")

    # -- every session end gives its place back -------------------------------------
    def hook_disconnect(self, session: Session) -> None:
        self._release(session)

    def _release(self, session: Session) -> None:
        held = session.notes.pop(NOTE, None)
        if held is None:
            return
        try:
            self.stores[SESSIONS].release(session.conn.peer_ip, held[0])
        except StateUnavailable as exc:
            self.log.warning("limit store unavailable, the session's place expires "
                             "by itself in %ss: %s", self.opts.lease, exc)
