"""Failed-AUTH counter per client IP, shared by every worker (and, with
`[state] backend = "redis"`, by every host).

Each failure is one member of the client's expiring set in the state store
(qsmtp/state): it counts for `[auth] failure_window` seconds, so the limit
is a sliding window, and a client that spreads its guesses over many
connections - many workers, many hosts - is still counted once.  IPv6
clients are counted per /64 (one host usually owns the whole /64).

When the store cannot be used:
- SQLite (`<server.state_dir>/auth-failures.sqlite`): fail OPEN (logged):
  passwords are still checked, only the counting is lost; refusing every
  AUTH because of a local disk problem would lock all users out.
- Redis: fail CLOSED: AUTH answers `454 4.7.0` (temporary, clients retry)
  without checking the password; an outage of the shared counter must not
  open every host of the cluster to unlimited guessing.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from typing import TYPE_CHECKING

from qsmtp.state import LeaseStore, StateUnavailable, lease_store, redis_configured, sqlite_path

if TYPE_CHECKING:
    from qsmtp.config import Config

log = logging.getLogger("qsmtp.auth")

FILENAME = "auth-failures.sqlite"
FEATURE = "auth"
_stores: dict[tuple[str, str], LeaseStore] = {}  # one per store, per process


class LimiterUnavailable(Exception):
    """The shared counter is down and the limit fails closed."""


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
    def __init__(self, store: LeaseStore, max_failures: int, window: int,
                 fail_closed: bool = False):
        self.store, self.max_failures, self.window = store, max_failures, window
        self.fail_closed = fail_closed

    @classmethod
    def from_config(cls, config: Config) -> FailureLimiter:
        path = sqlite_path(config, "", FILENAME)
        where = (config.state.backend, config.state.url if redis_configured(config) else path)
        store = _stores.get(where) or _stores.setdefault(
            where, lease_store(config, path, FEATURE))
        auth = config.auth
        return cls(store, auth.max_failures, auth.failure_window, redis_configured(config))

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def blocked(self, ip: str) -> bool:
        """True when `ip` has used up its failures within the window.
        Raises LimiterUnavailable when the store is down and we fail closed."""
        if not self.enabled:
            return False
        try:
            return self.store.count(client_key(ip), time.time()) >= self.max_failures
        except StateUnavailable as exc:
            return self._unavailable(exc)

    def record(self, ip: str) -> int:
        """Count one failure; returns the failures within the window (0 when
        the store is unavailable)."""
        if not self.enabled:
            return 0
        now = time.time()
        member = f"{os.getpid()}:{os.urandom(16).hex()}"
        try:
            return self.store.acquire(client_key(ip), member, now, now + self.window)[1]
        except StateUnavailable as exc:
            log.warning("auth failure counter unavailable, failure not counted: %s", exc)
            return 0

    def _unavailable(self, exc: StateUnavailable) -> bool:
        if self.fail_closed:
            log.error("auth failure counter unavailable, AUTH refused (454): %s", exc)
            raise LimiterUnavailable(str(exc)) from None
        log.warning("auth failure counter unavailable (not limiting): %s", exc)
        return False
