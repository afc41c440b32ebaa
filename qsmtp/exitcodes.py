"""Every exit code of `qsmtp` and `qsmtpctl`, in one place.

The numbers follow sysexits.h where it has one (70, 77, 78) so init systems
and scripts can tell a bad config from a crash; 1 and 2 are the shell's
"failed" and click's "usage error". docs/REFERENCE.md ("Exit codes") is
generated from CODES below by scripts/gen-reference.py.
"""

from __future__ import annotations

from typing import NamedTuple

EX_OK = 0
EX_FAIL = 1          # qsmtp: cannot start (port, pid file, user); qsmtpctl: nothing runs / refused
EX_USAGE = 2         # click: unknown flag, value that does not parse
EX_UNREADABLE = 2    # qsmtpctl: the registry exists but cannot be read (permissions)
EX_SOFTWARE = 70     # internal error: a crashed worker or supervisor, an unexpected exception
EX_NOPERM = 77       # qsmtpctl: may not signal the supervisor (run as root or the service user)
EX_CONFIG = 78       # invalid config file or flag value (one line: file, key, reason)


class ExitCode(NamedTuple):
    code: int
    name: str
    meaning: str  # docs/REFERENCE.md
    short: str = ""  # `qsmtpctl --help`


CODES: tuple[ExitCode, ...] = (
    ExitCode(EX_OK, "EX_OK", "success (`qsmtp serve`: stopped cleanly after TERM/INT)",
             short="ok"),
    ExitCode(EX_FAIL, "EX_FAIL",
             "`qsmtp serve`: cannot start (address in use, pid file held, cannot "
             "switch user); `qsmtpctl`: no instance is running, a reload was refused, "
             "a stop timed out, the registry's supervisor pid could not be proven "
             "(nothing signalled), a `user` command failed",
             short="not running or failed (a refused reload)"),
    ExitCode(EX_USAGE, "EX_USAGE / EX_UNREADABLE",
             "usage error from click (unknown flag, a value that does not parse); "
             "`qsmtpctl`: the registry exists but cannot be read (the line says which "
             "group to join)",
             short="usage error or registry unreadable"),
    ExitCode(EX_SOFTWARE, "EX_SOFTWARE",
             "internal error: the supervisor failed, a worker crashed, `qsmtpctl` hit "
             "an unexpected exception (one line, never a traceback)",
             short="internal error"),
    ExitCode(EX_NOPERM, "EX_NOPERM",
             "`qsmtpctl`: not allowed to signal the supervisor, or `config check` "
             "run by an account that may not read what the service user reads (the "
             "caller's own permission problem, not a config error): run as root or "
             "the service user",
             short="not allowed (run as root or the service user)"),
    ExitCode(EX_CONFIG, "EX_CONFIG",
             "invalid config file or flag value, a plugin that fails to load, "
             "`qsmtpctl config check` (or `config show`) on a bad file: one line "
             "`file: key: reason`. Under socket activation `qsmtp serve` does not "
             "exit 78: it keeps the sockets and answers 421 until the file is fixed",
             short="bad config"),
)


def summary() -> str:
    """`0 ok, 1 ..., 78 bad config`: the exit codes in one line (--help)."""
    return ", ".join(f"{c.code} {c.short}" for c in CODES)
