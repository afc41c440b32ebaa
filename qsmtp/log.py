"""Logging setup: the journal with QSMTP_* fields under systemd, else stderr
with sd-daemon `<N>` priority prefixes (which systemd also understands when
stderr is a plain pipe).

Structured fields travel as logging `extra=`: peer, service, worker, txn.
The journal handler turns them into QSMTP_PEER, QSMTP_SERVICE, ...; the
stderr formatter ignores them (they are in the message text already).
"""

from __future__ import annotations

import logging
import sys

from qsmtp import systemd

FIELDS = ("peer", "service", "worker", "txn")

# logging level -> syslog priority (sd-daemon(3) prefixes)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
             logging.INFO: 6, logging.DEBUG: 7}


def priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class PrefixFormatter(logging.Formatter):
    """`<6>qsmtp[1234]: message`; a traceback stays on following lines, each
    with the same prefix so journald/grep keep them together."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        if "\n" not in text and "\r" not in text:
            return prefix + text  # the usual one-line record
        return "\n".join(prefix + line for line in text.splitlines() or [""])


class FieldsFilter(logging.Filter):
    """extra={'peer': ...} -> QSMTP_PEER=... for the journal handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                record.__dict__[f"QSMTP_{name.upper()}"] = str(value)
        return True


def level_for(debug: bool, quiet: bool) -> int:
    if debug:
        return logging.DEBUG
    return logging.WARNING if quiet else logging.INFO


def setup(debug: bool = False, quiet: bool = False, force_stderr: bool = False) -> None:
    """(Re)configure the root logger; safe to call again (after fork, reload)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler
    if not force_stderr and systemd.journal_stream_matches(2):
        handler = systemd.journal_handler("qsmtp")
        handler.addFilter(FieldsFilter())
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PrefixFormatter("qsmtp[%(process)d]: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level_for(debug, quiet))
    # Cheap when a level is off: isEnabledFor is cached per logger, and
    # nothing below formats a message before the level check.
    logging.logProcesses = True
    logging.logThreads = False
    logging.logMultiprocessing = False
