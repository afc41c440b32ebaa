"""Paths and timings shared by the system tests and their conftest (one
module object: imported as system.sysutil everywhere)."""

from __future__ import annotations

import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(REPO, ".cache", "systest")
ARTIFACTS = os.path.join(CACHE, "last-run")  # status screen, journal, timings
TIMINGS: dict[str, float] = {}


def timed(name: str):
    class _Timer:
        def __enter__(self):
            self.start = time.monotonic()

        def __exit__(self, *exc):
            TIMINGS[name] = round(time.monotonic() - self.start, 2)
    return _Timer()
