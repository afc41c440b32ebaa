"""SQLite for state shared by all workers of one host (the default backend).

Fork safety: the connection is opened lazily, in the process that uses it,
and reopened when the pid changes (a connection must never cross fork()).
Concurrency: WAL (readers don't block the writer), `busy_timeout` (SQLite
waits for the lock itself), writes inside `BEGIN IMMEDIATE` (the write lock
is taken up front, so read-modify-write can't lose an update or deadlock on
a lock upgrade), and a bounded retry when SQLite still says busy/locked.
`DbUnavailable` is a `StateUnavailable`: each feature decides what a
missing store means (see qsmtp/state/__init__.py).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from qsmtp.state.errors import StateUnavailable

T = TypeVar("T")

BUSY_MS = 2000


class DbUnavailable(StateUnavailable):
    """The database could not be opened or stayed locked past the retries."""


FILE_MODE = 0o640  # client IPs and addresses: never world-readable


def _private_file(path: str) -> None:
    """Create the database file (or tighten one an older version left 0644)
    before SQLite opens it: SQLite gives its -wal/-shm files the same mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o007:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


class LazyDB:
    def __init__(self, path: str, schema: str, attempts: int = 8):
        self.path, self.schema, self.attempts = path, schema, attempts
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # After fork the parent's handle is dropped, never closed here: closing
        # it could disturb the parent's locks (SQLite's fork caveat).
        self._conn = None
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o750, exist_ok=True)
            _private_file(self.path)
            conn = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
            conn.execute("PRAGMA synchronous=NORMAL")
            self._retry(lambda: conn.executescript(self.schema))
        except (OSError, sqlite3.Error) as exc:
            raise DbUnavailable(f"{self.path}: {exc}") from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _retry(self, fn: Callable[[], T]) -> T:
        for attempt in range(self.attempts - 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        return fn()  # the last attempt: busy or not, its error is the caller's

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) in one BEGIN IMMEDIATE transaction, retried when busy."""
        conn = self.connection()

        def once() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        try:
            return self._retry(once)
        except sqlite3.Error as exc:
            raise DbUnavailable(f"{self.path}: {exc}") from None

    def read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.connection()
        try:
            return self._retry(lambda: conn.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise DbUnavailable(f"{self.path}: {exc}") from None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text

