"""log.py / systemd.py helpers: sd-daemon prefixes, journal detection,
structured fields, watchdog interval; notify is a no-op outside systemd."""

from __future__ import annotations

import io
import logging
import os

from qsmtp import log, systemd


def record(level, msg, **extra):
    rec = logging.LogRecord("qsmtp.x", level, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def test_prefixes_follow_syslog_priorities():
    fmt = log.PrefixFormatter("%(message)s")
    assert fmt.format(record(logging.ERROR, "bad")) == "<3>bad"
    assert fmt.format(record(logging.WARNING, "hm")) == "<4>hm"
    # a newline inside the message cannot forge a second line ...
    assert fmt.format(record(logging.INFO, "a\nb")) == "<6>a\\x0Ab"
    # ... a traceback keeps its lines, each with the prefix
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        rec = logging.LogRecord("q", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    lines = fmt.format(rec).split("\n")
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert fmt.format(record(logging.DEBUG, "d")) == "<7>d"


def test_fields_filter_makes_journal_fields():
    rec = record(logging.INFO, "s", peer="192.0.2.7", service="smtp", worker=12)
    assert log.FieldsFilter().filter(rec)
    assert rec.QSMTP_PEER == "192.0.2.7" and rec.QSMTP_SERVICE == "smtp"
    assert rec.QSMTP_WORKER == "12" and not hasattr(rec, "QSMTP_TXN")
    # python-systemd sends these as-is: never the string "None"
    assert rec.threadName and rec.processName and "None" not in (rec.threadName,
                                                                  rec.processName)


def test_session_context_reaches_every_record_until_unbound():
    log.bind(role="worker")
    log.bind(session="abc123", txn="abc123.1")
    try:
        rec = record(logging.INFO, "x", queue_id="1796.M1P2.host")
        log.FieldsFilter().filter(rec)
        assert rec.QSMTP_SESSION == "abc123" and rec.QSMTP_TXN == "abc123.1"
        assert rec.QSMTP_QUEUE_ID == "1796.M1P2.host" and rec.processName == "worker"
        log.bind(txn=None)
        rec = record(logging.INFO, "y")
        log.FieldsFilter().filter(rec)
        assert not hasattr(rec, "QSMTP_TXN") and rec.QSMTP_SESSION == "abc123"
    finally:
        log.unbind()
    rec = record(logging.INFO, "z")
    log.FieldsFilter().filter(rec)
    assert not hasattr(rec, "QSMTP_SESSION") and rec.processName == "worker"


HOSTILE = ["a\x1b[2Jb", "a\x0bb\x0cc", "x\x7fy", "c1\x85", "ls\u2028ps\u2029",
           "rtl\u202eoverride", "bad\udcff\udcfeutf8", "forged\nqsmtp[1]: line", "cr\rx"]


def test_hostile_bytes_are_escaped_in_every_formatter():
    for fmt in (log.PrefixFormatter("%(message)s"), log.TerminalFormatter("%(message)s"),
                log.EscapingFormatter("%(message)s")):
        for text in HOSTILE:
            out = fmt.format(logging.LogRecord("q", logging.INFO, __file__, 1, "helo=%s",
                                               (text,), None))
            assert "\n" not in out and out.isprintable(), (fmt, out)
    assert log.escape("bad\udcff") == "bad\\xFF"
    assert log.escape("a\x1bb\u2028") == "a\\x1Bb\\u2028"
    assert log.escape("naïve ünïcode ok") == "naïve ünïcode ok"


def test_terminal_lines_have_no_sd_daemon_prefix():
    fmt = log.TerminalFormatter("qsmtp[%(process)d]: %(message)s")
    assert fmt.format(record(logging.INFO, "serving")).startswith("qsmtp[")
    assert ": warning: hm" in fmt.format(record(logging.WARNING, "hm"))
    assert "<" not in fmt.format(record(logging.ERROR, "bad"))


def test_line_handler_writes_each_record_as_one_line():
    stream = io.StringIO()
    handler = log.LineHandler(stream)
    handler.setFormatter(log.TerminalFormatter("qsmtp[%(process)d]: %(message)s"))
    handler.handle(record(logging.INFO, "queued"))
    handler.handle(record(logging.WARNING, "hm"))
    lines = stream.getvalue().split("\n")
    assert lines[0].endswith("]: queued") and lines[1].endswith(": warning: hm")
    assert lines[2:] == [""]


def test_plural():
    assert log.plural(1, "worker") == "1 worker" and log.plural(2, "worker") == "2 workers"
    assert log.plural(0, "session") == "0 sessions"


def test_journal_stream_detection(tmp_path, monkeypatch):
    with open(tmp_path / "f", "w") as handle:
        st = os.fstat(handle.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert systemd.journal_stream_matches(handle.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not systemd.journal_stream_matches(handle.fileno())
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not systemd.journal_stream_matches(2)


def test_setup_picks_handler_and_level(monkeypatch):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        monkeypatch.delenv("INVOCATION_ID", raising=False)
        log.setup(quiet=True)
        assert isinstance(root.handlers[0].formatter, log.TerminalFormatter)
        monkeypatch.setenv("INVOCATION_ID", "0123abcd")  # systemd reads our stderr
        log.setup(quiet=True)
        assert isinstance(root.handlers[0].formatter, log.PrefixFormatter)
        assert root.level == logging.WARNING
        assert logging._srcfile is None  # stderr shows no caller: no stack walk
        st = os.fstat(2)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        log.setup(debug=True)
        assert type(root.handlers[0]).__name__ == "JournalHandler"
        assert root.level == logging.DEBUG
        # CODE_FILE / CODE_LINE / CODE_FUNC: the journal gets the caller
        assert logging._srcfile == log._SRCFILE is not None
        assert logging.getLogger("q").findCaller()[2] == "test_setup_picks_handler_and_level"
    finally:
        root.handlers[:], root.level = saved


def test_notify_is_a_noop_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready("x") is False and systemd.status("x") is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    assert systemd.watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert systemd.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert systemd.watchdog_interval() is None
