"""Paths and timings shared by the system tests and their conftest (one
module object: imported as system.sysutil everywhere)."""

from __future__ import annotations

import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cache_dir() -> str:
    """The rootfs cache and the dir shared into the container. The launcher
    hides the host's /tmp behind a tmpfs and nspawn dislikes `,` `:` and
    spaces, so a checkout under /tmp or /run (CI may clone there) keeps its
    cache in /var/cache instead of its own .cache/."""
    override = os.environ.get("QSMTP_SYSTEST_CACHE")
    if override:
        return override
    awkward = REPO.startswith(("/tmp/", "/run/", "/var/tmp/")) or any(c in REPO for c in " ,:")
    return "/var/cache/qsmtp-systest" if awkward else os.path.join(REPO, ".cache", "systest")


CACHE = _cache_dir()
ARTIFACTS = os.path.join(CACHE, "last-run")  # status screen, journal, timings
TIMINGS: dict[str, float] = {}


def timed(name: str):
    class _Timer:
        def __enter__(self):
            self.start = time.monotonic()

        def __exit__(self, *exc):
            TIMINGS[name] = round(time.monotonic() - self.start, 2)
    return _Timer()
