"""Misbehaving plugins for the reliability tests, loaded by the real daemon
by dotted path (`reliability_plugins:Hang`; conftest puts this directory on
the daemon's PYTHONPATH).  Each acts only on recipients whose local part
names it, so one server can run good and bad sessions side by side."""

from __future__ import annotations

import contextlib
import os
import time

from qsmtp.plugins.api import Option, Plugin, Result

_LEAK: list[bytes] = []  # grows per session in the worker that ran it


def _local(rcpt) -> str:
    return (getattr(rcpt, "local", "") or "").lower()


class Hang(Plugin):
    """RCPT <hang@...>: sleeps far past hook_timeout (the budget must trip).
    RCPT <stubborn@...>: swallows the timeout and keeps going (only the
    supervisor's heartbeat check can end it)."""

    def hook_rcpt(self, session, rcpt, params):
        local = _local(rcpt)
        if local == "hang":
            time.sleep(3600)
        if local == "stubborn":
            end = time.monotonic() + 3600
            while time.monotonic() < end:
                with contextlib.suppress(BaseException):  # that is the point
                    time.sleep(3600)
        return None


class Raise(Plugin):
    """RCPT <raise@...>: raises; DATA with a 'X-Raise: yes' header: raises at data_post."""

    def hook_rcpt(self, session, rcpt, params):
        if _local(rcpt) == "raise":
            raise RuntimeError("reliability: plugin raised on purpose")
        return None

    def hook_data_post(self, session):
        body = session.transaction.body
        if body is not None and b"X-Raise: yes" in body.header_block:
            raise RuntimeError("reliability: plugin raised at data_post on purpose")
        return None


class Leak(Plugin):
    """Every RCPT <leak@...> keeps `mb` more megabytes alive in the worker."""

    options = {"mb": Option(int, 8, "megabytes leaked per call")}

    def hook_rcpt(self, session, rcpt, params):
        if _local(rcpt) == "leak":
            _LEAK.append(os.urandom(1024) * (1024 * self.opts.mb))
        return None


class Probe(Plugin):
    """HELO/EHLO: tries to create a file in each `targets` directory and
    answers 550 with one `dir=ok|Errno` word per target (the test reads it)."""

    options = {"targets": Option(str, "", "directories, separated by ':'")}

    def _probe(self) -> str:
        words = []
        for index, directory in enumerate(filter(None, self.opts.targets.split(":"))):
            path = os.path.join(directory, f".qsmtp-probe-{os.getpid()}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                os.unlink(path)
                words.append(f"{index}=ok")
            except OSError as exc:
                words.append(f"{index}={exc.errno}")
        return " ".join(words)

    def hook_helo(self, session, host):
        return Result.DENY, "5.7.1 probe " + self._probe()

    hook_ehlo = hook_helo


class DieAtFork(Plugin):
    """While the file `while_exists` exists, every worker exits 3 right after
    fork, before its accept loop: a boot loop (what a plugin that re-opens a
    vanished resource in each new process would do).  Remove the file and the
    next worker lives."""

    options = {"while_exists": Option(str, "", "path of the switch file")}

    def setup(self) -> None:
        switch = self.opts.while_exists

        def in_child() -> None:
            if switch and os.path.exists(switch):
                os._exit(3)

        os.register_at_fork(after_in_child=in_child)
