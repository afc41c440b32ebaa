"""karma -- per-IP reputation remembered across connections.

Every connection ends with a score in `session.notes["karma"]` (-1 for each
refusal or naughty flag raised through the check plugins, +1 for each
message queued).  At disconnect the client IP's record in an SQLite file is
updated: a score at or below `-negative` counts as naughty and puts the IP
in the penalty box for `penalty_days`; a positive score counts as nice.

At connect:
- an IP in the penalty box is refused at once (`action`, default
  `denysoft_disconnect`: "You were naughty. You cannot connect for N more hours");
- an IP with history (nice - naughty) of at least `positive` is a good
  sender: marked `whitelisthost` (other checks skip it) and
  `session.notes["karma_good"]`.
`session.notes["karma_history"]` holds the history for other plugins.

The record is kept in the `[state]` store: with `backend = "sqlite"` (the
default) an SQLite file (WAL, one row per IP, atomic upserts) shared by the
workers of this host; with `backend = "redis"` one hash per IP in Redis,
updated by an atomic script and shared by every host (an IP unseen for a
year, or for twice `penalty_days` if longer, expires).  The store is opened
lazily in each worker; if it is unavailable or stays locked the plugin logs
and lets the connection through (fail open).

Options:
- `db_path` (default `<server.state_dir>/karma.sqlite`; sqlite backend).
- `negative` (int >= 1, default 1): score at or below -negative is naughty.
- `positive` (int >= 1, default 3): history making a good sender.
- `penalty_days` (float > 0, default 1).
- `action` (default `denysoft_disconnect`): for IPs in the penalty box:
  deny, denysoft, deny_disconnect, denysoft_disconnect, naughty, note.

qpsmtpd mapping: `karma negative N penalty_days D reject 1|naughty
reject_type ... db_dir DIR` -> `negative`, `penalty_days`, `action`,
`db_path = "DIR/karma.sqlite"` (the old BerkeleyDB file is not read).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from qsmtp.plugins.api import HookReturn, Option, Plugin
from qsmtp.plugins.builtin.naughty import ACTIONS, act, adjust_karma
from qsmtp.state import StateUnavailable, karma_store, sqlite_path

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session


DAY = 86400.0
KEEP = 365 * DAY  # Redis: an IP unseen this long is forgotten


class Karma(Plugin):
    """Remembers each IP's behaviour; penalises the bad, trusts the good."""

    options = {
        "db_path": Option(str, "", "SQLite file; default <state_dir>/karma.sqlite"),
        "negative": Option(int, 1, "score at or below -negative is naughty",
                           bounds=(1, 1_000_000)),
        "positive": Option(int, 3, "history (nice - naughty) of a good sender",
                           bounds=(1, 1_000_000)),
        # a year: entries are kept twice as long, and the store must be pruned
        "penalty_days": Option(float, 1.0, "days in the penalty box", bounds=(0.001, 365)),
        "action": Option(str, "denysoft_disconnect", "for IPs in the penalty box",
                         choices=ACTIONS),
    }

    def setup(self) -> None:
        self.store = karma_store(self.config, sqlite_path(
            self.config, self.opts.db_path, "karma.sqlite"))
        self.keep = max(KEEP, 2 * self.opts.penalty_days * DAY)
        self.clock = time.time

    def lookup(self, ip: str) -> tuple[int, int, float | None] | None:
        return self.store.get(ip)

    def hook_connect(self, session: Session) -> HookReturn:
        session.notes.setdefault("karma", 0)
        try:
            row = self.lookup(session.conn.peer_ip)
        except StateUnavailable as exc:
            self.log.error("karma store unavailable, not applied: %s", exc)
            return None
        if row is None:
            return None
        naughty, nice, penalty_start = row
        history = nice - naughty
        session.notes["karma_history"] = history
        left = (penalty_start or 0) + self.opts.penalty_days * DAY - self.clock()
        if penalty_start is not None and left > 0:
            hours = max(1, round(left / 3600))
            session.notes["karma_penalty"] = True  # refusing it must not extend the box
            return act(session, self, self.opts.action,
                       f"You were naughty. You cannot connect for {hours} more hours.")
        if history >= self.opts.positive:
            session.notes["karma_good"] = True
            session.notes.setdefault("whitelisthost", self.name)
        return None

    def hook_queue_post(self, session: Session) -> HookReturn:
        adjust_karma(session, +1)
        return None

    def hook_disconnect(self, session: Session) -> HookReturn:
        score = session.notes.get("karma", 0)
        boxed = session.notes.get("karma_penalty", False)
        naughty = score <= -self.opts.negative and not boxed
        nice = score > 0 and not boxed
        try:
            self.store.add(session.conn.peer_ip, naughty, nice, self.clock(), self.keep)
        except StateUnavailable as exc:
            self.log.error("karma store unavailable, %s not recorded: %s",
                           session.conn.peer_ip, exc)
        return None
