"""Fixtures of the registry tests (test_registry*.py, test_ctl*.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from helpers.registry import SysvGuard
from qsmtp.registry import Registry


@pytest.fixture
def sysv_guard() -> Iterator[SysvGuard]:
    guard = SysvGuard()
    yield guard
    assert guard.leftovers() == []


@pytest.fixture
def runtime_dir() -> Iterator[str]:
    # Not tmp_path: /tmp/pytest-of-root is 0700 and the permission tests run
    # readers as nobody, who must be able to reach the published file.
    path = tempfile.mkdtemp(prefix="qsmtp-reg-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def reg(runtime_dir: str, sysv_guard: SysvGuard) -> Iterator[Registry]:
    registry = Registry.create(runtime_dir, 8, os.getpid())
    sysv_guard.track(runtime_dir)
    yield registry
    registry.remove()
