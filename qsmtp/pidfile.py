"""--pid-file: refuse to start when it names a live process, replace a stale
one, remove it at stop (only if it still holds our pid)."""

from __future__ import annotations

import contextlib
import os


class PidFileError(Exception):
    pass


def read_pid(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror}") from None
    return int(text) if text.isdigit() and int(text) > 0 else None


def alive(pid: int) -> bool:
    """True while a process with this pid exists (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check(path: str) -> None:
    """Raise PidFileError when another instance is alive."""
    pid = read_pid(path)
    if pid and pid != os.getpid() and alive(pid):
        raise PidFileError(f"pid file {path} names a running process (pid {pid}); "
                           "is qsmtp already running?")


def unusable_dir(path: str, runtime_dir: str) -> str | None:
    """Why the pid file cannot go where asked, or None.  Its directory must
    exist already (qsmtp creates no directory for it: a typo must not make
    root create /nonexistent/dir), except runtime_dir, which qsmtp owns."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return None
    if directory == os.path.abspath(runtime_dir):
        return None  # startpaths checks that its parent exists
    return f"directory {directory} does not exist"


def write(path: str, pid: int | None = None, uid: int | None = None,
          gid: int | None = None) -> None:
    """Atomic replace, so a reader never sees an empty file."""
    check(path)
    pid = os.getpid() if pid is None else pid
    tmp = f"{path}.{pid}.tmp"
    try:
        with open(tmp, "w") as handle:
            handle.write(f"{pid}\n")
        os.chmod(tmp, 0o644)
        if uid is not None:
            os.chown(tmp, uid, -1 if gid is None else gid)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PidFileError(f"cannot write pid file {path}: {exc.strerror}") from None


def remove(path: str, pid: int | None = None) -> None:
    pid = os.getpid() if pid is None else pid
    with contextlib.suppress(PidFileError, OSError):
        if read_pid(path) == pid:
            os.unlink(path)
