"""The default backend: one SQLite file per feature in `[server] state_dir`,
shared by the workers of this host (see qsmtp/state/sqlitedb.py for how
concurrent workers never lose an update)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsmtp.state.base import GreyRules
from qsmtp.state.sqlitedb import LazyDB

if TYPE_CHECKING:
    import sqlite3


KARMA_SCHEMA = """
CREATE TABLE IF NOT EXISTS karma (
    ip TEXT PRIMARY KEY,
    naughty INTEGER NOT NULL DEFAULT 0,
    nice INTEGER NOT NULL DEFAULT 0,
    connects INTEGER NOT NULL DEFAULT 0,
    penalty_start REAL,
    last_seen REAL NOT NULL
);
"""
KARMA_UPSERT = """
INSERT INTO karma (ip, naughty, nice, connects, penalty_start, last_seen)
VALUES (?, ?, ?, 1, ?, ?)
ON CONFLICT(ip) DO UPDATE SET
    naughty = naughty + excluded.naughty,
    nice = nice + excluded.nice,
    connects = connects + 1,
    penalty_start = COALESCE(excluded.penalty_start, penalty_start),
    last_seen = excluded.last_seen
"""
GREY_SCHEMA = """
CREATE TABLE IF NOT EXISTS greylist (
    key TEXT PRIMARY KEY,
    first REAL NOT NULL,
    last REAL NOT NULL,
    passes INTEGER NOT NULL DEFAULT 0,
    blocked INTEGER NOT NULL DEFAULT 0
);
"""
LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    key TEXT NOT NULL, member TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (key, member));
CREATE INDEX IF NOT EXISTS leases_expires ON leases (expires);
"""


class SqliteKarma:
    def __init__(self, path: str):
        self.db = LazyDB(path, KARMA_SCHEMA)

    def get(self, ip: str) -> tuple[int, int, float | None] | None:
        rows = self.db.read("SELECT naughty, nice, penalty_start FROM karma WHERE ip = ?",
                            (ip,))
        return rows[0] if rows else None

    def add(self, ip: str, naughty: bool, nice: bool, now: float, keep: float) -> None:
        # `keep` is Redis's TTL; the SQLite file keeps every IP, as it always did.
        self.db.write(lambda conn: conn.execute(KARMA_UPSERT, (
            ip, int(naughty), int(nice), now if naughty else None, now)))


class SqliteGrey:
    def __init__(self, path: str):
        self.db = LazyDB(path, GREY_SCHEMA)

    def check(self, key: str, now: float, rules: GreyRules) -> bool:
        return self.db.write(lambda conn: _grey_step(conn, key, now, rules))

    def counts(self, key: str) -> tuple[int, int] | None:
        rows = self.db.read("SELECT passes, blocked FROM greylist WHERE key = ?", (key,))
        return rows[0] if rows else None

    def purge(self, now: float, rules: GreyRules) -> None:
        self.db.write(lambda conn: conn.execute(
            "DELETE FROM greylist WHERE (passes = 0 AND first < ?) OR last < ?",
            (now - rules.grey, now - rules.white)))


def _grey_step(conn: sqlite3.Connection, key: str, now: float, rules: GreyRules) -> bool:
    # The same state machine as GREY_CHECK in qsmtp/state/redis.py.
    row = conn.execute("SELECT first, last, passes FROM greylist WHERE key = ?",
                       (key,)).fetchone()
    expired = row is not None and (
        (row[2] == 0 and now - row[0] > rules.grey)
        or (row[2] > 0 and now - row[1] > rules.white))
    if row is None or expired:
        conn.execute("INSERT OR REPLACE INTO greylist (key, first, last, passes, blocked)"
                     " VALUES (?, ?, ?, 0, 1)", (key, now, now))
        return False
    if row[2] == 0 and now - row[0] < rules.black:
        conn.execute("UPDATE greylist SET blocked = blocked + 1 WHERE key = ?", (key,))
        return False
    conn.execute("UPDATE greylist SET passes = passes + 1, last = ? WHERE key = ?",
                 (now, key))
    return True


class SqliteLeases:
    def __init__(self, path: str, feature: str):
        self.db = LazyDB(path, LEASE_SCHEMA)
        self.prefix = feature + ":"  # several features may share one file

    def acquire(self, key: str, member: str, now: float, expires: float,
                limit: int = 0) -> tuple[bool, int]:
        key = self.prefix + key

        def step(conn: sqlite3.Connection) -> tuple[bool, int]:
            # Every write prunes the whole table: the index keeps it cheap,
            # and no separate purge job is needed.
            conn.execute("DELETE FROM leases WHERE expires <= ?", (now,))
            count = conn.execute("SELECT COUNT(*) FROM leases WHERE key = ?",
                                 (key,)).fetchone()[0]
            if 0 < limit <= count:
                return False, count
            conn.execute("INSERT OR REPLACE INTO leases (key, member, expires) "
                         "VALUES (?, ?, ?)", (key, member, expires))
            return True, count + 1
        return self.db.write(step)

    def renew(self, key: str, member: str, now: float, expires: float) -> None:
        self.db.write(lambda conn: conn.execute(
            "UPDATE leases SET expires = ? WHERE key = ? AND member = ?",
            (expires, self.prefix + key, member)))

    def release(self, key: str, member: str) -> None:
        self.db.write(lambda conn: conn.execute(
            "DELETE FROM leases WHERE key = ? AND member = ?", (self.prefix + key, member)))

    def count(self, key: str, now: float) -> int:
        rows = self.db.read("SELECT COUNT(*) FROM leases WHERE key = ? AND expires > ?",
                            (self.prefix + key, now))
        return rows[0][0]
