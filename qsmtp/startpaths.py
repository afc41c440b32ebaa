"""The paths `qsmtp serve` needs, checked before anything is created or
bound (issue "Security hardening" 3): a pid file in a missing directory, or
a maildir / state dir / runtime dir the service user cannot write, is a
config error (exit 78, naming the path and the user), not a server that
starts, reports ready and answers 451 to every message."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from qsmtp import pidfile, privileges

if TYPE_CHECKING:
    from qsmtp.config import Config


def problem(config: Config, account: privileges.Account | None) -> tuple[str, str] | None:
    """(setting name, reason) for the first unusable path, else None."""
    server = config.server
    parent = os.path.dirname(os.path.abspath(server.runtime_dir))
    if not os.path.isdir(parent):
        return "server.runtime_dir", f"cannot create {server.runtime_dir}: {parent} does not exist"
    if server.pid_file:
        reason = pidfile.unusable_dir(server.pid_file, server.runtime_dir)
        if reason:
            return "server.pid_file", f"cannot write {server.pid_file}: {reason}"
    if account is None:
        return None
    wanted = {"server.runtime_dir": server.runtime_dir}
    if config.queue.backend == "maildir":
        wanted["queue.path"] = config.queue.path
    wanted["server.state_dir"] = server.state_dir
    bad = set(privileges.unwritable(account, list(wanted.values())))
    for name, path in wanted.items():
        if path in bad:
            return name, f"{path} is not writable by user {account.name}"
    return None
