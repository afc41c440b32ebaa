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

The database (WAL, one row per IP, atomic upserts) is shared by all workers
and opened lazily in each worker; if it is unavailable or stays locked the
plugin logs and lets the connection through (fail open).

Options:
- `db_path` (default `<server.state_dir>/karma.sqlite`).
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
from typing import Any

from qsmtp.plugins.api import Option, Plugin, PluginError
from qsmtp.plugins.builtin._sqlite import DbUnavailable, LazyDB, db_path
from qsmtp.plugins.builtin.naughty import ACTIONS, act, adjust_karma

SCHEMA = """
CREATE TABLE IF NOT EXISTS karma (
    ip TEXT PRIMARY KEY,
    naughty INTEGER NOT NULL DEFAULT 0,
    nice INTEGER NOT NULL DEFAULT 0,
    connects INTEGER NOT NULL DEFAULT 0,
    penalty_start REAL,
    last_seen REAL NOT NULL
);
"""
UPSERT = """
INSERT INTO karma (ip, naughty, nice, connects, penalty_start, last_seen)
VALUES (?, ?, ?, 1, ?, ?)
ON CONFLICT(ip) DO UPDATE SET
    naughty = naughty + excluded.naughty,
    nice = nice + excluded.nice,
    connects = connects + 1,
    penalty_start = COALESCE(excluded.penalty_start, penalty_start),
    last_seen = excluded.last_seen
"""
DAY = 86400.0


class Karma(Plugin):
    """Remembers each IP's behaviour; penalises the bad, trusts the good."""

    options = {
        "db_path": Option(str, "", "SQLite file; default <state_dir>/karma.sqlite"),
        "negative": Option(int, 1, "score at or below -negative is naughty"),
        "positive": Option(int, 3, "history (nice - naughty) of a good sender"),
        "penalty_days": Option(float, 1.0, "days in the penalty box"),
        "action": Option(str, "denysoft_disconnect", "for IPs in the penalty box",
                         choices=ACTIONS),
    }

    def setup(self) -> None:
        for key in ("negative", "positive", "penalty_days"):
            if getattr(self.opts, key) <= 0:
                raise PluginError(self.name, key, "must be > 0")
        self.db = LazyDB(db_path(self, "db_path", "karma.sqlite"), SCHEMA)
        self.clock = time.time

    def lookup(self, ip: str) -> tuple[int, int, float | None] | None:
        rows = self.db.read("SELECT naughty, nice, penalty_start FROM karma WHERE ip = ?",
                            (ip,))
        return rows[0] if rows else None

    def hook_connect(self, session: Any) -> Any:
        session.notes.setdefault("karma", 0)
        try:
            row = self.lookup(session.conn.peer_ip)
        except DbUnavailable as exc:
            self.log.error("karma db unavailable, not applied: %s", exc)
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

    def hook_queue_post(self, session: Any) -> Any:
        adjust_karma(session, +1)
        return None

    def hook_disconnect(self, session: Any) -> Any:
        score = session.notes.get("karma", 0)
        boxed = session.notes.get("karma_penalty", False)
        naughty = score <= -self.opts.negative and not boxed
        nice = score > 0 and not boxed
        now = self.clock()
        try:
            self.db.write(lambda conn: conn.execute(UPSERT, (
                session.conn.peer_ip, int(naughty), int(nice),
                now if naughty else None, now)))
        except DbUnavailable as exc:
            self.log.error("karma db unavailable, %s not recorded: %s",
                           session.conn.peer_ip, exc)
        return None
