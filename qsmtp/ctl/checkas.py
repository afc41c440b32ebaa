"""`qsmtpctl config check` as the service user: the verdict must match what
a reload does, and the supervisor reloads as the service user (`server.user`,
or the packaged unit's User=qsmtp), not as root.  As root the check runs in a
child process that drops to that user; as another user, a permission problem
is the caller's own (exit 77), not a config error (78)."""

from __future__ import annotations

import os
from collections.abc import Callable

from qsmtp import privileges
from qsmtp.config import DEFAULT_PATH, ConfigError, peek
from qsmtp.exitcodes import EX_CONFIG, EX_SOFTWARE

PACKAGED_USER = "qsmtp"  # systemd/qsmtp.service User=


def service_user(path: str | None, explicit: str | None) -> privileges.Account | None:
    """--as-user, else server.user, else for the packaged config file the
    packaged unit's account (if it exists)."""
    packaged = PACKAGED_USER if path == DEFAULT_PATH else ""
    name = explicit if explicit is not None else (
        peek(path, ("server.user",))["server.user"] or packaged)
    if not name:
        return None
    try:
        return privileges.lookup(name)
    except KeyError:
        if explicit is not None or name != PACKAGED_USER:
            raise ConfigError(path or "command line", "server.user",
                              f"no such user {name!r}") from None
        return None  # no package installed: the caller runs it


def run_as(account: privileges.Account, check: Callable[[], object]) -> tuple[int, str]:
    """check() in a child that dropped to `account` -> (exit code, message)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's result is what the tests see
        code, message = 0, ""
        try:
            os.close(read_end)
            privileges.drop(account)
            check()
        except ConfigError as exc:
            code, message = EX_CONFIG, str(exc)
        except BaseException as exc:  # noqa: BLE001 - one line for the parent
            code, message = EX_SOFTWARE, f"internal error: {exc.__class__.__name__}: {exc}"
        os.write(write_end, message.encode("utf-8", "replace")[:65536])
        os._exit(code)
    os.close(write_end)
    chunks = []
    while True:
        data = os.read(read_end, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return (code if code >= 0 else EX_SOFTWARE), b"".join(chunks).decode("utf-8", "replace")


def callers_own_problem(exc: ConfigError, account: privileges.Account | None) -> bool:
    """A permission error met by someone who is neither root nor the service
    user says nothing about the config."""
    if account is None or os.geteuid() in (0, account.uid):
        return False
    return "ermission denied" in exc.reason
