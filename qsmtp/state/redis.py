"""The cluster backend: one Redis shared by every host (redis-py).

Every read-modify-write is one Lua script, which Redis runs atomically: no
lost update whichever worker on whichever host runs it.  Every key has a
TTL, so a host that dies (or a client never seen again) leaves nothing
behind for long.  Keys: `qsmtp:karma:<ip>` (hash), `qsmtp:grey:<sha256>`
(hash), `qsmtp:<feature>:<client>` (sorted set: member -> expiry time).

Fork safety: the client (and its connection pool) is created lazily in the
process that uses it and again when the pid changes - a socket never crosses
fork().  Short socket timeouts: a dead or hung Redis costs a hook at most
`TIMEOUT` seconds per call, then `RedisUnavailable`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis

from qsmtp.state.base import GreyRules
from qsmtp.state.errors import StateUnavailable

T = TypeVar("T")

TIMEOUT = 1.0
PREFIX = "qsmtp:"

KARMA_ADD = """
redis.call('HINCRBY', KEYS[1], 'naughty', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'nice', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'connects', 1)
redis.call('HSET', KEYS[1], 'last_seen', ARGV[3])
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 'penalty_start', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
# The same state machine as _grey_step in qsmtp/state/sqlite.py.
GREY_CHECK = """
local now, black = tonumber(ARGV[1]), tonumber(ARGV[2])
local grey, white = tonumber(ARGV[3]), tonumber(ARGV[4])
local row = redis.call('HMGET', KEYS[1], 'first', 'last', 'passes')
local first, last, passes = tonumber(row[1]), tonumber(row[2]), tonumber(row[3])
if first and ((passes == 0 and now - first > grey) or (passes > 0 and now - last > white)) then
  first = nil
end
if not first then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'first', ARGV[1], 'last', ARGV[1], 'passes', 0, 'blocked', 1)
  redis.call('EXPIRE', KEYS[1], math.ceil(grey) + 1)
  return 0
end
if passes == 0 and now - first < black then
  redis.call('HINCRBY', KEYS[1], 'blocked', 1)
  return 0
end
redis.call('HINCRBY', KEYS[1], 'passes', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(white) + 1)
return 1
"""
# Shared by acquire and renew: the key lives as long as its latest member.
_KEEP = """
local function keep(key, now, expires)
  local ttl = math.ceil(tonumber(expires) - tonumber(now)) + 1
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
"""
LEASE_ACQUIRE = _KEEP + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[4])
if limit > 0 and count >= limit then return {0, count} end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
keep(KEYS[1], ARGV[2], ARGV[3])
return {1, count + 1}
"""
LEASE_RENEW = _KEEP + """
if redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[3], ARGV[1]) == 1 then
  keep(KEYS[1], ARGV[2], ARGV[3])
end
return 1
"""


class RedisUnavailable(StateUnavailable):
    pass


def where(url: str) -> str:
    """The URL without its password, for log lines."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Connection:
    """One lazily created client per process, and the scripts bound to it."""

    def __init__(self, url: str):
        self.url, self.where = url, where(url)
        self._client: redis.Redis[str] | None = None
        self._scripts: dict[str, Any] = {}
        self._pid = 0

    def client(self) -> redis.Redis[str]:
        if self._client is None or self._pid != os.getpid():
            # The parent's client is dropped, not closed: its sockets are the parent's.
            self._client = redis.Redis.from_url(
                self.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                decode_responses=True)
            self._scripts, self._pid = {}, os.getpid()
        return self._client

    def run(self, fn: Callable[[redis.Redis[str]], T]) -> T:
        try:
            return fn(self.client())
        except redis.RedisError as exc:
            raise RedisUnavailable(f"{self.where}: {exc}") from None
        except BaseException:
            # Interrupted mid-call (hook time budget, AbortSession): a reply may
            # be half read on a pooled socket; the next call starts afresh.
            self._client = None
            raise

    def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        def call(client: redis.Redis[str]) -> Any:
            script = self._scripts.get(source)
            if script is None:
                script = self._scripts[source] = client.register_script(source)
            return script(keys=keys, args=args)  # EVALSHA, EVAL when not cached
        return self.run(call)


def _num(value: float) -> str:
    return repr(float(value))


class RedisKarma:
    def __init__(self, conn: Connection):
        self.conn = conn

    def get(self, ip: str) -> tuple[int, int, float | None] | None:
        naughty, nice, start = self.conn.run(
            lambda c: c.hmget(PREFIX + "karma:" + ip, "naughty", "nice", "penalty_start"))
        if naughty is None and nice is None:
            return None
        return int(naughty or 0), int(nice or 0), float(start) if start else None

    def add(self, ip: str, naughty: bool, nice: bool, now: float, keep: float) -> None:
        self.conn.script(KARMA_ADD, [PREFIX + "karma:" + ip],
                         [int(naughty), int(nice), _num(now), math.ceil(keep)])


class RedisGrey:
    def __init__(self, conn: Connection):
        self.conn = conn

    def check(self, key: str, now: float, rules: GreyRules) -> bool:
        return bool(self.conn.script(GREY_CHECK, [PREFIX + "grey:" + key], [
            _num(now), _num(rules.black), _num(rules.grey), _num(rules.white)]))

    def counts(self, key: str) -> tuple[int, int] | None:
        row: list[Any] = self.conn.run(
            lambda c: c.hmget(PREFIX + "grey:" + key, "passes", "blocked"))
        passes, blocked = row
        return None if passes is None else (int(passes), int(blocked))

    def purge(self, now: float, rules: GreyRules) -> None:
        """Nothing to do: every record carries its TTL."""


class RedisLeases:
    def __init__(self, conn: Connection, feature: str):
        self.conn, self.prefix = conn, f"{PREFIX}{feature}:"

    def acquire(self, key: str, member: str, now: float, expires: float,
                limit: int = 0) -> tuple[bool, int]:
        added, count = self.conn.script(LEASE_ACQUIRE, [self.prefix + key],
                                        [member, _num(now), _num(expires), int(limit)])
        return bool(added), int(count)

    def renew(self, key: str, member: str, now: float, expires: float) -> None:
        self.conn.script(LEASE_RENEW, [self.prefix + key],
                         [member, _num(now), _num(expires)])

    def release(self, key: str, member: str) -> None:
        self.conn.run(lambda c: c.zrem(self.prefix + key, member))

    def count(self, key: str, now: float) -> int:
        return int(self.conn.run(lambda c: c.zcount(self.prefix + key, f"({_num(now)}",
                                                    "+inf")))
