"""Pure pool policy: tables of cases, no clock, no processes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsmtp.policy import (
    RETIRE_AFTER,
    BootLoopThrottle,
    Plan,
    PoolSize,
    PoolView,
    WorkerView,
    lifetime_with_jitter,
    plan,
    status_line,
    target_pool,
)


def pool(busy: int = 0, idle: int = 0, starting: int = 0, idle_since=None) -> PoolView:
    workers = [WorkerView(pid=100 + n, state="busy") for n in range(busy)]
    since = idle_since or [float(n) for n in range(idle)]
    workers += [WorkerView(pid=200 + n, state="idle", since=since[n]) for n in range(idle)]
    workers += [WorkerView(pid=300 + n, state="starting") for n in range(starting)]
    return PoolView.of(workers)


def settings(children: int = 15, idle_children: int = 5):
    return PoolSize(children=children, idle_children=idle_children)


@pytest.mark.parametrize("busy, children, idle_children, want", [
    (0, 15, 5, 5),
    (7, 15, 5, 12),
    (10, 15, 5, 15),
    (15, 15, 5, 15),
    (14, 15, 5, 15),
    (0, 1, 1, 1),
    (3, 4, 4, 4),
    (0, 15, 0, 15),   # 0 = idle management off: all children (qpsmtpd-prefork)
    (2, 3, 0, 3),
])
def test_target_pool(busy, children, idle_children, want):
    assert target_pool(busy, children, idle_children) == want


@pytest.mark.parametrize("view, cfg, spawn", [
    (pool(), settings(), 5),                         # cold start
    (pool(idle=5), settings(), 0),                   # steady
    (pool(busy=5), settings(), 5),                   # burst: at once
    (pool(busy=7, idle=1), settings(), 4),
    (pool(busy=12, idle=0), settings(), 3),          # capped by children
    (pool(busy=15), settings(), 0),                  # at max
    (pool(busy=2, starting=3), settings(), 2),       # starting ones count as spares
    (pool(idle=2), settings(children=2, idle_children=2), 0),
])
def test_plan_spawn(view, cfg, spawn):
    result = plan(view, cfg, now=100.0)
    assert result.spawn == spawn and result.retire == []
    assert view.total + result.spawn <= cfg.children


def test_surplus_retires_after_delay_longest_idle_first():
    view = pool(busy=1, idle=9, idle_since=[50, 10, 40, 20, 30, 60, 70, 80, 90])
    cfg = settings()
    first = plan(view, cfg, now=100.0)
    assert first.retire == [] and first.surplus_since == 100.0
    later = plan(view, cfg, now=100.0 + RETIRE_AFTER - 0.1, surplus_since=first.surplus_since)
    assert later.retire == [] and later.surplus_since == 100.0
    due = plan(view, cfg, now=100.0 + RETIRE_AFTER, surplus_since=later.surplus_since)
    # target = 1 busy + 5 idle = 6; 10 workers -> 4 retire: idle since 10, 20, 30, 40
    assert due.retire == [201, 203, 204, 202]
    assert due.surplus_since is None


def test_surplus_clock_resets_when_surplus_goes_away():
    cfg = settings()
    first = plan(pool(idle=8), cfg, now=0.0)
    assert first.surplus_since == 0.0
    gone = plan(pool(busy=3, idle=5), cfg, now=5.0, surplus_since=first.surplus_since)
    assert gone.surplus_since is None
    again = plan(pool(idle=8), cfg, now=12.0, surplus_since=gone.surplus_since)
    assert again.retire == [] and again.surplus_since == 12.0


def test_retire_within_30_seconds_of_burst_end():
    """docs/REFERENCE.md, Pool: idle workers above idle_children retire within 30 s after a burst,
    even if the supervisor only ticks once a second."""
    cfg, surplus, now = settings(), None, 0.0
    view = pool(idle=15)
    while now <= 30.0:
        result = plan(view, cfg, now=now, surplus_since=surplus)
        surplus = result.surplus_since
        if result.retire:
            break
        now += 1.0
    assert now < 30.0 and len(result.retire) == 10


def test_busy_workers_are_never_retired():
    view = pool(busy=3, idle=0)
    result = plan(view, settings(children=15, idle_children=0), now=1e6, surplus_since=0.0)
    assert result.retire == []


def test_throttle_stops_spawning():
    throttle = BootLoopThrottle()
    throttle.record_exit(age=0.05, now=10.0)
    result = plan(pool(), settings(), now=10.05, throttle=throttle)
    assert result.spawn == 0 and result.throttled_until == pytest.approx(10.1)
    result = plan(pool(), settings(), now=10.2, throttle=throttle)
    assert result.spawn == 5 and result.throttled_until is None


@pytest.mark.parametrize("ages, want_delay", [
    ([], 0.0),
    ([0.1], 0.1),
    ([0.1, 0.1], 0.2),
    ([0.1] * 3, 0.4),
    ([0.1] * 7, 6.4),
    ([0.1] * 8, 10.0),      # capped
    ([0.1] * 50, 10.0),
    ([0.1, 0.1, 60.0], 0.0),        # a healthy run resets
    ([0.1, 0.1, 3.0], 0.2),         # neither early nor healthy: unchanged
    ([0.1, 0.1, 60.0, 0.5], 0.1),
])
def test_backoff_table(ages, want_delay):
    throttle = BootLoopThrottle()
    for n, age in enumerate(ages):
        throttle.record_exit(age=age, now=float(n))
    assert throttle.delay() == pytest.approx(want_delay)


def test_throttle_status_text():
    throttle = BootLoopThrottle()
    assert throttle.status_text(0.0) is None and throttle.throttled_until(0.0) is None
    for _ in range(6):
        throttle.record_exit(age=0.01, now=100.0)
    assert throttle.status_text(100.0) == \
        "throttled: workers dying at start, next spawn in 3.2 s"
    assert throttle.throttled_until(103.0) and throttle.throttled_until(103.2) is None
    throttle.record_healthy()
    assert throttle.status_text(100.0) is None


@pytest.mark.parametrize("lifetime", [1, 2, 3, 4, 10, 100, 1000])
def test_lifetime_jitter_range(lifetime):
    rng = random.Random(7)
    values = {lifetime_with_jitter(lifetime, rng) for _ in range(500)}
    assert min(values) >= max(1, round(lifetime * 0.75))
    assert max(values) <= max(1, round(lifetime * 1.25))
    if lifetime >= 10:
        assert len(values) > 3  # really jittered: workers never retire together


@given(st.integers(1, 100_000), st.integers(0, 2**32))
def test_lifetime_jitter_is_positive(lifetime, seed):
    value = lifetime_with_jitter(lifetime, random.Random(seed))
    assert 1 <= value <= lifetime * 1.25 + 1


@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40),
       st.integers(1, 40), st.integers(0, 40))
def test_plan_never_exceeds_children(busy, idle, starting, children, idle_children):
    idle_children = min(idle_children, children)
    view = pool(busy=busy, idle=idle, starting=starting)
    result = plan(view, settings(children, idle_children), now=1e6, surplus_since=0.0)
    assert result.spawn >= 0
    if view.total <= children:
        assert view.total + result.spawn <= children
    assert len(result.retire) <= idle
    remaining = view.total - len(result.retire)
    assert remaining >= min(target_pool(busy, children, idle_children), view.total)


@pytest.mark.parametrize("args, want", [
    ((12, 7, 5, 15, 18342), "12 workers: 7 busy, 5 idle, max 15; 18342 sessions"),
    ((1, 0, 1, 1, 1), "1 worker: 0 busy, 1 idle, max 1; 1 session"),
    ((0, 0, 0, 15, 0), "0 workers: 0 busy, 0 idle, max 15; 0 sessions"),
])
def test_status_line(args, want):
    assert status_line(*args) == want


def test_status_line_with_throttle():
    line = status_line(0, 0, 0, 15, 0, extra="throttled: workers dying at start, "
                                                "next spawn in 0.4 s")
    assert line.endswith("; throttled: workers dying at start, next spawn in 0.4 s")


def test_plan_is_a_value():
    assert Plan() == Plan(spawn=0, retire=[], throttled_until=None, surplus_since=None)
