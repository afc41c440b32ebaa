"""Failed-AUTH counter per client IP, shared by every worker.

State lives in `<server.state_dir>/auth-failures.sqlite` (WAL, BEGIN
IMMEDIATE writes: see qsmtp/plugins/builtin/_sqlite.py), so a client that
spreads its guesses over many connections, and so over many forked workers,
is still counted once.  A sliding window: one row per failure, rows older
than `[auth] failure_window` are pruned on every write.  IPv6 clients are
counted per /64 (one host usually owns the whole /64).

When the database cannot be used the limiter fails OPEN (logged): passwords
are still checked, only the counting is lost.  Refusing every AUTH because
of a disk problem would lock all users out.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time

from qsmtp.plugins.builtin._sqlite import DbUnavailable, LazyDB

log = logging.getLogger("qsmtp.auth")

FILENAME = "auth-failures.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (client TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_client ON failures (client, at);
CREATE INDEX IF NOT EXISTS failures_at ON failures (at);
"""
_dbs: dict[str, LazyDB] = {}  # one per path, per process (LazyDB is fork-safe)


def client_key(ip: str) -> str:
    """The unit counted: the IPv4 address, or the IPv6 /64."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class FailureLimiter:
    def __init__(self, state_dir: str, max_failures: int, window: int):
        self.max_failures, self.window = max_failures, window
        path = os.path.join(state_dir, FILENAME)
        self.db = _dbs.get(path) or _dbs.setdefault(path, LazyDB(path, SCHEMA))

    @classmethod
    def from_config(cls, config) -> "FailureLimiter":
        auth = config.auth
        return cls(config.server.state_dir, auth.max_failures, auth.failure_window)

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def blocked(self, ip: str) -> bool:
        """True when `ip` has used up its failures within the window."""
        if not self.enabled:
            return False
        try:
            rows = self.db.read("SELECT COUNT(*) FROM failures WHERE client = ? AND at > ?",
                                (client_key(ip), time.time() - self.window))
        except DbUnavailable as exc:
            log.warning("auth failure counter unavailable (not limiting): %s", exc)
            return False
        return rows[0][0] >= self.max_failures

    def record(self, ip: str) -> int:
        """Count one failure; returns the failures within the window (0 when
        the database is unavailable)."""
        if not self.enabled:
            return 0
        now, key = time.time(), client_key(ip)

        def write(conn) -> int:
            conn.execute("DELETE FROM failures WHERE at <= ?", (now - self.window,))
            conn.execute("INSERT INTO failures (client, at) VALUES (?, ?)", (key, now))
            return conn.execute("SELECT COUNT(*) FROM failures WHERE client = ?",
                                (key,)).fetchone()[0]

        try:
            return self.db.write(write)
        except DbUnavailable as exc:
            log.warning("auth failure counter unavailable (not limiting): %s", exc)
            return 0
