"""Run one function in several forked processes at once, as qsmtp's workers
would, and collect what each returns (for shared-state plugins: SQLite)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


def _run(target: Callable[..., Any], barrier, queue, args: tuple) -> None:
    barrier.wait(30)  # all start together: the contention is the point
    queue.put(target(*args))


def run_forked(target: Callable[..., Any], args: tuple, workers: int) -> list[Any]:
    """`target(*args)` in `workers` forked processes started together; their
    results, in completion order. A worker that crashes fails the caller."""
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_run, args=(target, barrier, queue, args))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    return results
