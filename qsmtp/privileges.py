"""--user: resolve the account early (a typo is a config error, exit 78),
and drop the supervisor (and so every worker) to it once the sockets, the
pid file and the registry exist."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def lookup(name: str) -> Account:
    """KeyError when there is no such user."""
    entry = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def chown_tree(path: str, account: Account) -> None:
    """runtime_dir and what is in it (not recursive below it: flat by design)."""
    if not os.path.isdir(path):
        return
    os.chown(path, account.uid, account.gid)
    for name in os.listdir(path):
        os.chown(os.path.join(path, name), account.uid, account.gid, follow_symlinks=False)


def drop(account: Account) -> None:
    """Groups first, then gid, then uid (after setuid we could not change them)."""
    if os.getuid() == account.uid and os.geteuid() == account.uid:
        return
    os.setgroups(list(account.groups))
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
    os.environ["USER"] = os.environ["LOGNAME"] = account.name
    os.environ["HOME"] = account.home


def unwritable(account: Account, paths: list[str]) -> list[str]:
    """The paths `account` could not write into (or, for a path not there
    yet, could not reach: qsmtp creates those and gives them to it).  Asked
    in a forked child that really drops to the account, so ACLs, groups and
    read-only mounts all count; the caller keeps its privileges."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            drop(account)
            bad = [p for p in paths if not _usable(p)]
            os.write(write_end, "\0".join(bad).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        answer = handle.read().decode()
    os.waitpid(pid, 0)
    return [p for p in answer.split("\0") if p]


def _usable(path: str) -> bool:
    if os.path.exists(path):
        return os.access(path, os.W_OK | os.X_OK)
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return os.access(parent, os.X_OK)
