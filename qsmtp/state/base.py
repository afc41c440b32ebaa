"""What karma, greylisting, the AUTH failure limit and `limit` need from a
state store; qsmtp/state/sqlite.py and qsmtp/state/redis.py implement it.

Times are the caller's `time.time()` (hosts sharing a Redis keep their
clocks in step with NTP).  Every method may raise `StateUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GreyRules:
    black: float  # a new triplet is refused this long
    grey: float   # ... and must be retried before this
    white: float  # a passed triplet stays known this long after its last pass


class KarmaStore(Protocol):
    def get(self, ip: str) -> tuple[int, int, float | None] | None:
        """(naughty, nice, penalty_start) or None for an unknown IP."""

    def add(self, ip: str, naughty: bool, nice: bool, now: float, keep: float) -> None:
        """One connection's outcome, atomically; a naughty one (re)starts the
        penalty box.  `keep`: seconds an unseen IP is remembered (Redis TTL)."""


class GreyStore(Protocol):
    def check(self, key: str, now: float, rules: GreyRules) -> bool:
        """One atomic step of the triplet's state machine; True = may pass."""

    def counts(self, key: str) -> tuple[int, int] | None:
        """(passes, blocked) of a triplet, None when unknown."""

    def purge(self, now: float, rules: GreyRules) -> None:
        """Drop expired triplets (Redis expires them by itself)."""


class LeaseStore(Protocol):
    """Sets of members that expire one by one: a member is a failed AUTH, a
    connection (rate) or a live session (concurrency); counting the members
    not yet expired gives a sliding window or a concurrency count."""

    def acquire(self, key: str, member: str, now: float, expires: float,
                limit: int = 0) -> tuple[bool, int]:
        """Atomically: drop the expired members, then add `member` unless
        `limit` (> 0) members are already there.  (added, count after)."""

    def renew(self, key: str, member: str, now: float, expires: float) -> None:
        """Push a member's expiry out (a session still alive)."""

    def release(self, key: str, member: str) -> None:
        """Remove a member (a session ended)."""

    def count(self, key: str, now: float) -> int:
        """Members not expired at `now`."""
