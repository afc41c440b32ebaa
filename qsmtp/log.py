"""Logging setup: the journal with QSMTP_* fields under systemd, else stderr
(with sd-daemon `<N>` priority prefixes only when systemd reads that stderr;
a terminal gets plain `qsmtp[pid]: warning: ...` lines).

Structured fields travel as logging `extra=` (peer, service, worker, txn,
queue_id, session) or come from the session context the engine binds for
the duration of a connection (`bind`/`unbind`), so every line of a session
carries QSMTP_SESSION (and QSMTP_TXN while a transaction is open). The
journal handler turns them into QSMTP_PEER, QSMTP_TXN, QSMTP_QUEUE_ID, ...

Every text that reaches a handler passes `escape` here, in one place: a
client's control bytes, invalid UTF-8, U+2028 or bidi overrides in a HELO
or address never reach a terminal tailing the log, or the journal, raw.
"""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType

from qsmtp import procid, systemd
from qsmtp.smtp import chars

_ExcInfo = (tuple[type[BaseException], BaseException, TracebackType | None]
            | tuple[None, None, None])

_SRCFILE = logging._srcfile
FIELDS = ("peer", "service", "worker", "session", "txn", "queue_id")
_JOURNAL_KEYS = tuple((name, f"QSMTP_{name.upper()}") for name in FIELDS)

# logging level -> syslog priority (sd-daemon(3) prefixes)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
             logging.INFO: 6, logging.DEBUG: 7}

# The session a worker is serving now (one at a time): merged into every
# record's journal fields.
_context: dict[str, str] = {}

def escape(text: str) -> str:
    """Make `text` safe for one log line: the same escapes as in headers
    (controls, U+2028/2029, bidi controls, invalid UTF-8 as \\xHH)."""
    return chars.escape(text)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 worker', '2 workers'."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def bind(**fields: object) -> None:
    """Add fields to the session context (None removes one)."""
    for name, value in fields.items():
        if value is None:
            _context.pop(name, None)
        else:
            _context[name] = str(value)


def unbind() -> None:
    """The session is over: forget its fields (the process role stays)."""
    role = _context.get("role")
    _context.clear()
    if role:
        _context["role"] = role


def priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class EscapingFormatter(logging.Formatter):
    """The message escaped whole (a newline in it cannot forge a line); a
    traceback keeps its line structure, each line escaped."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._uses_time = self.usesTime()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info or self._uses_time:
            return super().format(record)
        # The usual one-line record: what logging.Formatter.format does for
        # it (same text) without its generic checks; a few lines a message.
        record.message = record.getMessage()
        return self.formatMessage(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # procid, not logging's logProcesses: no getpid syscall per record.
        record.process = procid.pid
        return chars.escape(self._style.format(record))

    def formatException(self, ei: _ExcInfo) -> str:
        return "\n".join(escape(line) for line in super().formatException(ei).split("\n"))


class PrefixFormatter(EscapingFormatter):
    """`<6>qsmtp[1234]: message` for systemd reading our stderr; a traceback
    stays on following lines, each with the same prefix so journald/grep
    keep them together."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        if "\n" not in text:
            return prefix + text  # the usual one-line record
        return "\n".join(prefix + line for line in text.split("\n"))


class TerminalFormatter(EscapingFormatter):
    """`qsmtp[1234]: warning: message` (Postfix's style); INFO unlabelled."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno != logging.INFO:
            record.message = f"{record.levelname.lower()}: {record.message}"
        return super().formatMessage(record)


class FieldsFilter(logging.Filter):
    """extra={'peer': ...} and the session context -> QSMTP_PEER=... for the
    journal handler; no `None` fields reach the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        for name, key in _JOURNAL_KEYS:
            value = fields.get(name)
            if value is None:
                value = _context.get(name)
            if value is not None:
                fields[key] = chars.escape(value if value.__class__ is str else str(value))
        # python-systemd sends these unconditionally; logThreads and
        # logMultiprocessing are off (cheaper), so name what we are instead.
        record.threadName = "MainThread"
        record.processName = _context.get("role", "qsmtp")
        return True


class LineHandler(logging.StreamHandler):
    """A StreamHandler for a stream that passes each write on (Python's
    stderr: write-through, or line-buffered on a terminal): the record's
    line leaves with its write, so no flush() per record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(record)


def level_for(debug: bool, quiet: bool) -> int:
    if debug:
        return logging.DEBUG
    return logging.WARNING if quiet else logging.INFO


def under_systemd() -> bool:
    """Started by systemd (its stderr goes to the journal or a log pipe)."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


def setup(debug: bool = False, quiet: bool = False, force_stderr: bool = False) -> None:
    """(Re)configure the root logger; safe to call again (after fork, reload)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    journal = not force_stderr and systemd.journal_stream_matches(2)
    if journal:
        handler = systemd.journal_handler("qsmtp")
        handler.addFilter(FieldsFilter())
        handler.setFormatter(EscapingFormatter("%(message)s"))
    else:
        unbuffered = (getattr(sys.stderr, "write_through", False)
                      or getattr(sys.stderr, "line_buffering", False))
        handler = (LineHandler(sys.stderr) if unbuffered
                   else logging.StreamHandler(sys.stderr))
        cls = PrefixFormatter if under_systemd() else TerminalFormatter
        handler.setFormatter(cls("qsmtp[%(process)d]: %(message)s"))
    # Where a line was logged from (a stack walk per record) is only used by
    # the journal (CODE_FILE, CODE_LINE, CODE_FUNC); stderr lines don't show
    # it, so it is not looked up there (logging's documented switch).
    logging._srcfile = _SRCFILE if journal else None
    root.addHandler(handler)
    root.setLevel(level_for(debug, quiet))
    # Cheap when a level is off: isEnabledFor is cached per logger, and
    # nothing below formats a message before the level check. The pid comes
    # from procid when a line is formatted (no syscall per record).
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
