"""queue/maildir -- store each accepted message in a Maildir (`[queue] path`).

Implied when `[queue] backend = "maildir"` (the default).  No options.

The directory and its tmp/ new/ cur/ are created at load time (mode 0700) if
missing; if that fails, or they are not writable, the server refuses to start
(or the reload is refused).  `qsmtpctl config check` only checks that this
would work, and creates nothing.  Each transaction becomes
ONE file, LF line ends (the Maildir convention):

    Return-Path: <sender>
    Delivered-To: <rcpt1>      (one per recipient, in RCPT order)
    Received: ...              (and any other header plugins added)
    <the message as received, dot-unstuffed>

Durability: the file is written as an unnamed file in new/'s file system
(O_TMPFILE; one write when the message is in memory, a body spooled to disk
is copied file to file by the kernel), fsync'd, then given its name in new/
(linkat: it appears there whole, as a rename from tmp/ would make it), and
new/ is fsync'd; only then is the message acknowledged (250).  Where the
file system or the kernel has no O_TMPFILE (or /proc is missing), the
classic way: written under tmp/, fsync'd, renamed into new/.  Any OS error
(disk full, read-only, EIO, quota) leaves nothing in new/ or tmp/ and gives
`451 4.3.0` so the client keeps the message and retries.

Why unnamed: with many workers storing at once, each message adding and
removing a tmp/ entry costs CPU in the kernel (that directory's lock and
blocks): bench/profile/maildir_store.py, 15 writers on ext4, measured 1.3-2.3
ms per message the tmp/ way and 1.0-1.5 unnamed in a maildir in use (on
freshly made directories the two were within noise).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qsmtp import procid
from qsmtp.plugins.api import DENYSOFT, OK, HookReturn, Plugin, PluginError, body_of, transaction_of
from qsmtp.smtp.chars import escape

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session, Transaction


_SUBDIRS = ("tmp", "new", "cur")
# O_TMPFILE refused: not supported by the file system (EOPNOTSUPP), a kernel
# older than 3.11 (EISDIR, EINVAL).
_NO_UNNAMED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}


class _Failed(Exception):
    """An OS error while storing, with the stage it happened in."""

    def __init__(self, stage: str, error: OSError):
        super().__init__(stage)
        self.stage, self.error = stage, error
_counter = itertools.count(1)  # per process; the pid in the name tells forks apart


class QueueMaildir(Plugin):
    """Delivers to the Maildir at `[queue] path` (no options)."""

    # Local file syscalls: a disk that hangs holds them in uninterruptible
    # sleep, where SIGALRM cannot cut in; and a timeout raised between the
    # rename and the fsync of new/ would answer 451 for a message already in
    # new/ (delivered twice after the client's retry). So no timer here.
    budgeted = False

    def setup(self) -> None:
        self.path = os.path.abspath(self.config.queue.path)
        dirs = [self.path] + [os.path.join(self.path, s) for s in _SUBDIRS]
        missing = [d for d in dirs if not os.path.isdir(d)]
        try:
            if self.config.check_only:
                _check_creatable(missing)
            else:
                for directory in missing:
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                self.give_to_service_user(missing)
        except (OSError, KeyError) as exc:
            raise PluginError(self.name, "queue.path",
                              f"cannot create maildir {self.path}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        for directory in dirs[2:0:-1]:  # new/, tmp/: where a delivery writes
            if directory not in missing and not os.access(directory, os.W_OK | os.X_OK):
                raise PluginError(self.name, "queue.path",
                                  f"cannot write to maildir {directory}: Permission denied")
        self.tmp_dir = os.path.join(self.path, "tmp")
        self.new_dir = os.path.join(self.path, "new")
        self.new_fd = _ProcessDir(self.new_dir)       # one open+close fewer per message
        self.proc_fd = _ProcessDir("/proc/self/fd")   # names an unnamed file for linkat
        self._unnamed = True   # O_TMPFILE + linkat, until this system says no
        # Maildir names must not contain '/' or ':' (the latter starts flags).
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def give_to_service_user(self, created: list[str]) -> None:
        """setup() runs in the supervisor, possibly as root before `--user`
        drops privileges: directories we just created belong to that user,
        or the workers could not write into them."""
        if not created or os.geteuid() != 0 or not self.config.server.user:
            return
        import pwd
        entry = pwd.getpwnam(self.config.server.user)
        for directory in created:
            os.chown(directory, entry.pw_uid, entry.pw_gid)

    def hook_queue(self, session: Session) -> HookReturn:
        txn = transaction_of(session)
        name = self.unique_name()
        tmp = f"{self.tmp_dir}/{name}"  # absolute dirs (setup); no os.path.join per message
        new = f"{self.new_dir}/{name}"
        try:
            if not self._store_unnamed(name, txn):
                self._store_in_tmp(tmp, new, txn)
            _step("sync", _fsync_dir, self.new_fd.get())
        except _Failed as failed:
            self.log.error("session %s: cannot queue %s into %s (%s): %s", session.id,
                           txn.id, self.path, failed.stage,
                           failed.error.strerror or failed.error)
            _unlink_quietly(tmp)
            if failed.stage == "sync":
                self.new_fd.forget()  # reopen next time (the dir may be new)
                # Not known to be durable: take it back so the client's retry
                # does not deliver it twice.
                _unlink_quietly(new)
            return DENYSOFT, "4.3.0 Temporary failure storing the message, try again later"
        return OK, f"2.0.0 Ok: queued as {name}"

    def _store_unnamed(self, name: str, txn: Transaction) -> bool:
        """Write + fsync an unnamed file, then link it into new/ as `name`.
        False (nothing done) when this system can't; _Failed on an OS error."""
        if not self._unnamed:
            return False
        try:
            proc = self.proc_fd.get()
        except OSError:
            self._unnamed = False  # no /proc: the tmp/ way
            return False
        try:
            new_fd = self.new_fd.get()
            fd = os.open(self.new_dir, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in _NO_UNNAMED:
                raise _Failed("write", exc) from None
            self._unnamed = False  # this file system or kernel: the tmp/ way
            return False
        try:
            _step("write", self._write_fd, fd, txn)
            # linkat(AT_SYMLINK_FOLLOW) through /proc names the open file.
            _step("link", os.link, str(fd), name, src_dir_fd=proc, dst_dir_fd=new_fd)
        finally:
            os.close(fd)  # unnamed and unlinked: the kernel frees it
        return True

    def _store_in_tmp(self, tmp: str, new: str, txn: Transaction) -> None:
        """The classic way: written under tmp/, fsync'd, renamed into new/."""
        _step("write", self.write_file, tmp, txn)
        _step("rename", os.rename, tmp, new)

    def unique_name(self) -> str:
        now = time.time()
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        return f"{sec}.M{usec}P{procid.pid}Q{next(_counter)}.{self.host}"

    def write_file(self, path: str, txn: Transaction) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            self._write_fd(fd, txn)
        finally:
            os.close(fd)

    @staticmethod
    def _write_fd(fd: int, txn: Transaction) -> None:
        body_of(txn).write_to(fd, prefix=envelope_headers(txn))
        os.fsync(fd)


class _ProcessDir:
    """A directory kept open, per process: a worker never uses a descriptor
    it inherited from the supervisor."""

    def __init__(self, path: str):
        self.path, self.fd, self.pid = path, -1, 0

    def get(self) -> int:
        if self.pid != procid.pid:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.pid = procid.pid
        return self.fd

    def forget(self) -> None:
        if self.pid == procid.pid:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.pid = 0


def _step(stage: str, call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """call(*args), an OSError reported as _Failed(stage)."""
    try:
        call(*args, **kwargs)
    except OSError as exc:
        raise _Failed(stage, exc) from None


def envelope_headers(txn: Transaction) -> bytes:
    """Return-Path, Delivered-To per recipient, then txn.added_headers (LF).
    Addresses are escaped (chars.escape): no control byte or invalid UTF-8
    reaches the stored headers, whatever a plugin let through."""
    sender = txn.sender.address if txn.sender is not None else ""
    lines = [f"Return-Path: <{escape(sender)}>"]
    lines.extend(f"Delivered-To: <{escape(rcpt.address)}>" for rcpt in txn.recipients)
    lines.extend(txn.added_headers)
    lines.append("")
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def _fsync_dir(fd: int) -> None:
    os.fsync(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _check_creatable(missing: list[str]) -> None:
    """Raise the OSError os.makedirs would, without creating anything."""
    if not missing:
        return
    parent = os.path.dirname(missing[0])
    while parent and not os.path.isdir(parent):
        if os.path.exists(parent):
            raise FileExistsError(17, "File exists (not a directory)", parent)
        parent = os.path.dirname(parent)
    if os.path.exists(missing[0]):
        raise FileExistsError(17, "File exists (not a directory)", missing[0])
    if not os.access(parent or ".", os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied", parent)
