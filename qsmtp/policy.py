"""Pure pool decisions: how many workers to spawn, which to retire, when to
back off.  No I/O and no clock: the caller passes `now`, so every rule is a
table-driven unit test.

Rules (docs/REFERENCE.md "Precise rules", Pool):
- the pool is min(children, busy + idle_children): a burst is answered at
  once (every plan spawns up to the target);
- idle workers above the target retire once the surplus has lasted
  RETIRE_AFTER seconds (well within the 30 s the contract allows), the ones idle
  longest first, so a short lull between bursts does not churn processes;
- a worker retires after a jittered child_lifetime, so workers forked
  together do not all retire together;
- workers dying right after start are respawned with a doubling back-off
  (0.1 s .. 10 s), reset by a healthy run, and STATUS says so.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

RETIRE_AFTER = 10.0      # seconds a surplus must last before idle workers retire
EARLY_DEATH = 1.0        # a worker exiting younger than this died "at start"
HEALTHY_RUN = 5.0        # a worker living this long resets the back-off
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
JITTER = 0.25            # lifetime is uniform in [L*(1-J), L*(1+J)]


@dataclass(frozen=True)
class PoolSize:
    """What a plan sizes the pool by: server.children and the current idle
    target (server.idle_children, moved by TTIN/TTOU)."""
    children: int
    idle_children: int


@dataclass(frozen=True)
class WorkerView:
    """What the supervisor knows of one live worker (not yet told to retire)."""
    pid: int
    state: str            # "starting", "idle" or "busy"
    since: float = 0.0    # when it entered that state (orders the idle ones)


@dataclass(frozen=True)
class PoolView:
    workers: tuple[WorkerView, ...]

    @classmethod
    def of(cls, workers: Iterable[WorkerView]) -> PoolView:
        return cls(tuple(workers))

    def count(self, state: str) -> int:
        return sum(1 for w in self.workers if w.state == state)

    @property
    def total(self) -> int:
        return len(self.workers)

    @property
    def busy(self) -> int:
        return self.count("busy")

    @property
    def idle(self) -> int:
        # A starting worker will be idle in a moment: count it as a spare so
        # one burst does not spawn twice.
        return self.count("idle") + self.count("starting")


@dataclass(frozen=True)
class Plan:
    spawn: int = 0
    retire: list[int] = field(default_factory=list)
    throttled_until: float | None = None
    surplus_since: float | None = None  # feed back into the next plan()


def target_pool(busy: int, children: int, idle_children: int) -> int:
    """Workers wanted: every busy one plus the spares, capped at children.

    idle_children = 0 means "idle management off" as in qpsmtpd-prefork
    (`0 to disable`): keep all `children` workers, since with no spare at all
    nobody would be left to accept the next connection."""
    if idle_children <= 0:
        return max(0, children)
    return max(0, min(children, busy + idle_children))


def plan(pool: PoolView, settings: PoolSize, now: float, *,
         surplus_since: float | None = None,
         throttle: BootLoopThrottle | None = None,
         retire_after: float = RETIRE_AFTER) -> Plan:
    """One supervisor tick.  `surplus_since` is the previous Plan's value."""
    target = target_pool(pool.busy, settings.children, settings.idle_children)
    throttled = throttle.throttled_until(now) if throttle else None
    spawn = 0
    if pool.total < target:
        spawn = target - pool.total
        if throttled is not None:
            spawn = 0
    retire: list[int] = []
    surplus = pool.total - target
    if surplus <= 0:
        surplus_since = None
    else:
        surplus_since = now if surplus_since is None else surplus_since
        if now - surplus_since >= retire_after:
            retire = longest_idle(pool, surplus)
            surplus_since = None
    return Plan(spawn=spawn, retire=retire, throttled_until=throttled,
                surplus_since=surplus_since)


def longest_idle(pool: PoolView, count: int) -> list[int]:
    idle = sorted((w for w in pool.workers if w.state == "idle"), key=lambda w: w.since)
    return [w.pid for w in idle[:count]]


def lifetime_with_jitter(child_lifetime: int, rng: random.Random | None = None) -> int:
    """Sessions this worker serves before retiring: child_lifetime ± 25 %."""
    rng = rng or random.Random()
    low = max(1, round(child_lifetime * (1 - JITTER)))
    high = max(low, round(child_lifetime * (1 + JITTER)))
    return rng.randint(low, high)


class BootLoopThrottle:
    """Back-off for workers that die right after they start (a broken plugin,
    a missing file): 0.1 s, 0.2 s … up to 10 s between spawns."""

    def __init__(self, first: float = BACKOFF_FIRST, maximum: float = BACKOFF_MAX,
                 early: float = EARLY_DEATH, healthy: float = HEALTHY_RUN):
        self.first, self.maximum, self.early, self.healthy = first, maximum, early, healthy
        self.failures = 0
        self.next_spawn: float | None = None

    def record_exit(self, age: float, now: float) -> None:
        """A worker exited `age` seconds after it was forked."""
        if age < self.early:
            self.failures += 1
            self.next_spawn = now + self.delay()
        elif age >= self.healthy:
            self.reset()

    def record_healthy(self) -> None:
        """A worker got through its first session: the code path works."""
        self.reset()

    def reset(self) -> None:
        self.failures = 0
        self.next_spawn = None

    def delay(self) -> float:
        if self.failures == 0:
            return 0.0
        return min(self.maximum, self.first * 2 ** (self.failures - 1))

    def throttled_until(self, now: float) -> float | None:
        if self.next_spawn is not None and now < self.next_spawn:
            return self.next_spawn
        return None

    def status_text(self, now: float) -> str | None:
        until = self.throttled_until(now)
        if until is None:
            return None
        return f"throttled: workers dying at start, next spawn in {until - now:.1f} s"


def status_line(workers: int, busy: int, idle: int, maximum: int,
                sessions_total: int, extra: str | None = None) -> str:
    """sd_notify STATUS: '12 workers: 7 busy, 5 idle, max 15; 18342 sessions'."""
    noun = "worker" if workers == 1 else "workers"
    line = (f"{workers} {noun}: {busy} busy, {idle} idle, max {maximum}; "
            f"{sessions_total} session{'' if sessions_total == 1 else 's'}")
    return f"{line}; {extra}" if extra else line
