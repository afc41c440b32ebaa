"""The only module that talks to systemd.  Outside systemd every call is a
cheap no-op: notify() needs NOTIFY_SOCKET, listen_fds() needs LISTEN_FDS.

Only the supervisor notifies (NotifyAccess=main): workers never import the
notify helpers' state, and `forget()` drops NOTIFY_SOCKET in a child so a
plugin that calls sd_notify by itself cannot confuse systemd either.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("qsmtp.systemd")

_DEFAULT_NAME = "smtp"


def socket_activated() -> bool:
    """LISTEN_FDS is meant for us (before listen_fds() unsets it)."""
    return bool(os.environ.get("LISTEN_FDS")) and \
        os.environ.get("LISTEN_PID", str(os.getpid())) == str(os.getpid())


def listen_fds() -> dict[int, str]:
    """{fd: name} of the sockets systemd passed us (LISTEN_FDS/LISTEN_FDNAMES),
    or {} outside socket activation.  Unsets the variables so workers and
    plugins do not see them.  A socket without FileDescriptorName= arrives
    named "unknown" (sd_listen_fds_with_names): it is served as "smtp"."""
    if not os.environ.get("LISTEN_FDS"):
        return {}
    from systemd import daemon

    fds = daemon.listen_fds_with_names(unset_environment=True)
    return {fd: (name if name and name != "unknown" else _DEFAULT_NAME)
            for fd, name in fds.items()}


def _notify(text: str) -> bool:
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    from systemd import daemon

    try:
        return bool(daemon.notify(text))
    except OSError as exc:  # systemd went away: not our problem to die of
        log.debug("sd_notify failed: %s", exc)
        return False


def ready(status: str | None = None) -> bool:
    return _notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def reloading() -> bool:
    """RELOADING=1 with MONOTONIC_USEC (systemd >= 253 Type=notify-reload wants it)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return _notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> bool:
    return _notify("STOPPING=1")


def status(text: str) -> bool:
    return _notify(f"STATUS={text}")


def mainpid(pid: int) -> bool:
    return _notify(f"MAINPID={pid}")


def watchdog() -> bool:
    return _notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6 / 2


def forget() -> None:
    """In a worker: nothing below the supervisor may notify."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(name, None)


def journal_stream_matches(fd: int = 2) -> bool:
    """True when `fd` is the journal stream systemd connected (JOURNAL_STREAM
    is dev:ino of it): then logging goes to the journal natively."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def journal_handler(identifier: str = "qsmtp") -> logging.Handler:
    from systemd.journal import JournalHandler

    return JournalHandler(SYSLOG_IDENTIFIER=identifier)
