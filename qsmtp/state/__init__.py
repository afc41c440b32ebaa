"""Shared state for karma, greylisting, the AUTH failure limit and `limit`.

`[state] backend = "sqlite"` (default): SQLite files in `[server] state_dir`
(or a plugin's `db_path`), shared by the workers of one host - no server to
run.  `backend = "redis"`: one Redis at `[state] url` shared by every host;
atomic Lua scripts, TTLs on every key.

When the store can't be used (`StateUnavailable`), each feature decides:
- karma, greylisting, limit: fail OPEN - the mail passes, one log line.
  They are heuristics and throttles; refusing every client because the
  store is down would turn a state outage into a mail outage (and the local
  `[server] max_from_ip` gate keeps working without any store).
- AUTH failure limit: on Redis fail CLOSED - AUTH gets `454 4.7.0`
  (temporary; clients retry, nothing is lost) without checking the password,
  so an outage of the shared counter never opens the whole cluster to
  password guessing.  On SQLite it fails open as it always did: a local disk
  problem must not lock every user out of one host.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from qsmtp.state.base import GreyRules, GreyStore, KarmaStore, LeaseStore
from qsmtp.state.errors import StateUnavailable

if TYPE_CHECKING:
    from qsmtp.config import Config


__all__ = ["GreyRules", "LeaseStore", "StateUnavailable", "grey_store", "karma_store",
           "lease_store", "preload", "redis_configured", "sqlite_path"]

_connections: dict[str, Any] = {}  # url -> redis Connection, one per process


def redis_configured(config: Config) -> bool:
    return config.state.backend == "redis"


def _redis(config: Config) -> tuple[Any, Any]:
    """(the redis backend module, this process's Connection to the url).
    Imported on first use: redis-py costs ~0.3 s and a few MB at start, which
    a single host on SQLite (and every qsmtpctl run) should not pay."""
    backend = importlib.import_module("qsmtp.state.redis")
    url = config.state.url
    conn = _connections.get(url)
    if conn is None:
        conn = _connections[url] = backend.Connection(url)
    return backend, conn


def _sqlite() -> Any:
    """The SQLite backend, imported on first use: sqlite3 and its library
    (~1 MiB in every process of the fleet) only where a feature keeps state.
    Every feature opens its store before the fork (plugins in setup(), the
    AUTH limit through `preload` from qsmtp.app), so no worker imports it."""
    return importlib.import_module("qsmtp.state.sqlite")


def preload(config: Config) -> None:
    """Import the configured backend now (in the supervisor, before the fork)
    for a store a worker opens later (the AUTH failure limit)."""
    if redis_configured(config):
        importlib.import_module("qsmtp.state.redis")
    else:
        _sqlite()


def sqlite_path(config: Config, path: str, filename: str) -> str:
    """A plugin's `db_path` option, or `<server.state_dir>/<filename>`."""
    return path or os.path.join(config.server.state_dir, filename)


def karma_store(config: Config, path: str) -> KarmaStore:
    if redis_configured(config):
        backend, conn = _redis(config)
        return backend.RedisKarma(conn)
    return _sqlite().SqliteKarma(path)


def grey_store(config: Config, path: str) -> GreyStore:
    if redis_configured(config):
        backend, conn = _redis(config)
        return backend.RedisGrey(conn)
    return _sqlite().SqliteGrey(path)


def lease_store(config: Config, path: str, feature: str) -> LeaseStore:
    """Expiring sets for `feature` ("auth", "limit:conn" ...): `path` is the
    SQLite file, `feature` the Redis key namespace."""
    if redis_configured(config):
        backend, conn = _redis(config)
        return backend.RedisLeases(conn, feature)
    return _sqlite().SqliteLeases(path, feature)
