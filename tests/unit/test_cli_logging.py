"""log.py / systemd.py helpers: sd-daemon prefixes, journal detection,
structured fields, watchdog interval; notify is a no-op outside systemd."""

from __future__ import annotations

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
    assert fmt.format(record(logging.INFO, "a\nb")) == "<6>a\n<6>b"
    assert fmt.format(record(logging.DEBUG, "d")) == "<7>d"


def test_fields_filter_makes_journal_fields():
    rec = record(logging.INFO, "s", peer="192.0.2.7", service="smtp", worker=12)
    assert log.FieldsFilter().filter(rec)
    assert rec.QSMTP_PEER == "192.0.2.7" and rec.QSMTP_SERVICE == "smtp"
    assert rec.QSMTP_WORKER == "12" and not hasattr(rec, "QSMTP_TXN")


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
        log.setup(quiet=True)
        assert isinstance(root.handlers[0].formatter, log.PrefixFormatter)
        assert root.level == logging.WARNING
        st = os.fstat(2)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        log.setup(debug=True)
        assert type(root.handlers[0]).__name__ == "JournalHandler"
        assert root.level == logging.DEBUG
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
