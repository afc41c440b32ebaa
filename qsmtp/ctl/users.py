"""`qsmtpctl user add|passwd|del|list`: edit the auth/file password file.

The file is the `path` of the `auth/file` plugin in the config (or
`--file`).  Every change: take an exclusive lock (`<file>.lock`), read the
current file, write a temp file in the same directory, fsync it, rename it
over the old one, fsync the directory.  Mode 0640, and the old file's group
is kept (the service user's group reads it).  A running server picks the
change up at the next AUTH (it watches the file).

Passwords come from a hidden prompt (asked twice) or, with
`--password-stdin`, from the first line of standard input; never from the
command line, where `ps` would show them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping

import click

from qsmtp.ctl.common import config_option, fail, load_config
from qsmtp.exitcodes import EX_CONFIG, EX_FAIL
from qsmtp.plugins.builtin._auth import (
    DEFAULT_LN,
    PasswdFormatError,
    ScryptHash,
    check_user_name,
    hash_password,
    parse_passwd,
)

# change(lines, users) -> the new lines, run under the lock by _edit.
Change = Callable[[list[str], Mapping[str, object]], list[str]]
PLUGIN_NAMES = ("auth/file", "auth_file")
MODE = 0o640
file_option = click.option("--file", "-f", "path", metavar="PATH",
                           help="Password file [default: the auth/file plugin's path].")
cost_option = click.option("--cost", type=click.IntRange(10, 20), default=DEFAULT_LN,
                           show_default=True, metavar="LN",
                           help="scrypt cost, log2(N); each check takes 2^LN * 1 KiB of memory.")
stdin_option = click.option("--password-stdin", is_flag=True,
                            help="Read the password from the first line of stdin.")


@click.group("user")
@config_option
def user_group() -> None:
    """Add, change or remove SMTP AUTH users (auth/file)."""


def _file(path: str | None) -> str:
    if path:
        return path
    config = load_config()
    for entry in config.plugins:
        if entry.get("name") in PLUGIN_NAMES and entry.get("path"):
            return str(entry["path"])
    fail(f"{config.path or '(built-in defaults)'}: no auth/file plugin with a path; "
         "use --file PATH", EX_CONFIG)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        # default="": an empty answer is refused below instead of re-asked
        # forever (stdin at EOF reads as empty in some front ends).
        password = click.prompt("Password", hide_input=True, default="",
                                show_default=False, err=True)
        again = click.prompt("Repeat password", hide_input=True, default="",
                             show_default=False, err=True)
        if password != again:
            fail("the passwords do not match", EX_FAIL)
    if not password:
        fail("empty password refused", EX_FAIL)
    if "\0" in password:
        fail("password must not contain NUL", EX_FAIL)
    return password


def _new_hash(user: str, from_stdin: bool, cost: int) -> str:
    """Asked before the file is locked: a prompt may take a while."""
    reason = check_user_name(user)
    if reason:
        fail(f"{user!r}: {reason}", EX_FAIL)
    return hash_password(_password(from_stdin), ln=cost)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Exclusive lock on <path>.lock, held while the file is rewritten."""
    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, MODE)
    except OSError as exc:
        fail(f"cannot lock {path}: {exc.strerror or exc}", EX_FAIL)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: str) -> tuple[list[str], dict[str, ScryptHash]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_passwd(handle.read(), path)
    except FileNotFoundError:
        return [], {}
    except PasswdFormatError as exc:
        fail(f"{exc}; fix the file first", EX_FAIL)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}", EX_FAIL)


def _write(path: str, lines: list[str]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), MODE)
            if old is not None and (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), old.st_uid, old.st_gid)
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _edit(path: str, user: str, change: Change) -> None:
    """Run change(lines, users) -> new lines under the lock, then write."""
    reason = check_user_name(user)
    if reason:
        fail(f"{user!r}: {reason}", EX_FAIL)
    with _locked(path):
        lines, users = _read(path)
        new = change(lines, users)
        try:
            _write(path, new)
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}", EX_FAIL)


def _require(user: str, users: Mapping[str, object], path: str, *, exists: bool) -> None:
    """Asked before the password prompt and again under the lock: another
    qsmtpctl may have changed the file in between."""
    if exists and user not in users:
        fail(f"no user {user!r} in {path}", EX_FAIL)
    if not exists and user in users:
        fail(f"user {user!r} already exists in {path}", EX_FAIL)


def _index(lines: list[str], user: str) -> int:
    prefix = user + ":"
    return next(i for i, line in enumerate(lines) if line.startswith(prefix))


@user_group.command("add")
@config_option
@file_option
@stdin_option
@cost_option
@click.argument("user")
def add(user: str, path: str | None, password_stdin: bool, cost: int) -> None:
    """Add USER (refused if it exists)."""
    path = _file(path)
    _require(user, _read(path)[1], path, exists=False)
    hashed = _new_hash(user, password_stdin, cost)

    def change(lines: list[str], users: Mapping[str, object]) -> list[str]:
        _require(user, users, path, exists=False)
        return lines + [f"{user}:{hashed}"]

    _edit(path, user, change)
    click.echo(f"added {user} to {path}")


@user_group.command("passwd")
@config_option
@file_option
@stdin_option
@cost_option
@click.argument("user")
def passwd(user: str, path: str | None, password_stdin: bool, cost: int) -> None:
    """Set a new password for USER."""
    path = _file(path)
    _require(user, _read(path)[1], path, exists=True)
    hashed = _new_hash(user, password_stdin, cost)

    def change(lines: list[str], users: Mapping[str, object]) -> list[str]:
        _require(user, users, path, exists=True)
        lines[_index(lines, user)] = f"{user}:{hashed}"
        return lines

    _edit(path, user, change)
    click.echo(f"changed the password of {user} in {path}")


@user_group.command("del")
@config_option
@file_option
@click.argument("user")
def delete(user: str, path: str | None) -> None:
    """Remove USER."""
    path = _file(path)

    def change(lines: list[str], users: Mapping[str, object]) -> list[str]:
        _require(user, users, path, exists=True)
        del lines[_index(lines, user)]
        return lines

    _edit(path, user, change)
    click.echo(f"removed {user} from {path}")


@user_group.command("list")
@config_option
@file_option
def list_users(path: str | None) -> None:
    """List the user names (never the hashes)."""
    _lines, users = _read(_file(path))
    for name in users:
        click.echo(name)
