"""This process's pid, kept current across fork without a syscall per use:
glibc no longer caches getpid(), and a worker needs its pid on every
session (session id, log prefix, maildir file names)."""

from __future__ import annotations

import os

pid = os.getpid()  # read as `procid.pid`: the module attribute follows forks


def _forked() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
