"""The failed-AUTH counter (real SQLite, real forked processes), the debug
log redaction and the reader's 12288-octet AUTH lines."""

from __future__ import annotations

import os
import socket
import sqlite3
from types import SimpleNamespace

import pytest

from qsmtp import config as qconfig
from qsmtp.smtp import authlimit
from qsmtp.smtp.authlimit import FILENAME, FailureLimiter, client_key
from qsmtp.smtp.conversation import redact
from qsmtp.smtp.reader import LINE, MAX_AUTH_LINE, TOO_LONG, Reader
from qsmtp.state.sqlite import SqliteLeases


def sqlite_limiter(state_dir, max_failures: int, window: int) -> FailureLimiter:
    store = SqliteLeases(os.path.join(state_dir, FILENAME), "auth")
    return FailureLimiter(store, max_failures, window)


def test_limit_and_window(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(authlimit, "time", SimpleNamespace(time=lambda: now[0]))
    limiter = sqlite_limiter(tmp_path, max_failures=3, window=60)
    assert [limiter.record("192.0.2.1") for _ in range(2)] == [1, 2]
    assert not limiter.blocked("192.0.2.1")
    assert limiter.record("192.0.2.1") == 3
    assert limiter.blocked("192.0.2.1")
    assert not limiter.blocked("192.0.2.2")  # per client
    now[0] += 61  # the failures age out of the window, and are pruned
    assert not limiter.blocked("192.0.2.1")
    assert limiter.record("192.0.2.2") == 1
    rows = sqlite3.connect(tmp_path / authlimit.FILENAME).execute(
        "SELECT COUNT(*) FROM leases").fetchone()[0]
    assert rows == 1


def test_ipv6_counted_per_64(tmp_path):
    assert client_key("2001:db8:1:2::5") == client_key("2001:db8:1:2:ffff::9") \
        == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::5") != client_key("2001:db8:1:2::5")
    limiter = sqlite_limiter(tmp_path, max_failures=2, window=60)
    limiter.record("2001:db8:1:2::5")
    limiter.record("2001:db8:1:2::6")
    assert limiter.blocked("2001:db8:1:2::7") and not limiter.blocked("2001:db8:1:3::7")


def test_no_lost_updates_across_processes(tmp_path):
    limiter = sqlite_limiter(tmp_path, max_failures=1000, window=600)
    limiter.blocked("192.0.2.9")  # the parent opened it before fork, like the supervisor
    pids = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(25):
                    limiter.record("192.0.2.9")
            finally:
                os._exit(0)
        pids.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)
    assert limiter.record("192.0.2.9") == 6 * 25 + 1


def test_unusable_database_fails_open(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    limiter = sqlite_limiter(blocker / "sub", max_failures=1, window=60)
    assert limiter.record("192.0.2.1") == 0
    assert not limiter.blocked("192.0.2.1")
    assert "not limiting" in caplog.text


def test_zero_turns_the_limit_off(tmp_path):
    limiter = sqlite_limiter(tmp_path, max_failures=0, window=60)
    assert limiter.record("192.0.2.1") == 0 and not limiter.blocked("192.0.2.1")
    assert not (tmp_path / authlimit.FILENAME).exists()


def test_redact_keeps_only_the_mechanism():
    assert redact(b"AUTH PLAIN AGFsaWNlAHMzY3JldA==") == b"AUTH PLAIN [credentials not logged]"
    assert redact(b"auth login YWxpY2U=") == b"AUTH login [credentials not logged]"
    assert redact(b"  AUTH PLAIN AGFsaWNlAHMzY3JldA==") == b"AUTH PLAIN [credentials not logged]"
    assert redact(b"AUTH\tPLAIN AGFsaWNlAHMzY3JldA==") == b"AUTH PLAIN [credentials not logged]"
    assert redact(b"AUTHORIZE x") == b"AUTHORIZE x"
    assert redact(b"MAIL FROM:<a@b>") == b"MAIL FROM:<a@b>"


def _reader(data: bytes) -> Reader:
    ours, theirs = socket.socketpair()
    theirs.sendall(data)
    theirs.close()
    return Reader(ours, 5, lambda: None)


def test_auth_lines_may_be_12288_octets():
    initial = b"A" * (MAX_AUTH_LINE - len(b"AUTH PLAIN ") - 2)
    reader = _reader(b"AUTH PLAIN " + initial + b"\r\nNOOP " + b"x" * 600 + b"\r\nQUIT\r\n")
    assert reader.read_command() == (LINE, b"AUTH PLAIN " + initial)
    assert reader.read_command()[0] == TOO_LONG  # other verbs keep 512
    assert reader.read_command() == (LINE, b"QUIT")


def test_auth_line_past_12288_is_too_long():
    reader = _reader(b"AUTH PLAIN " + b"A" * MAX_AUTH_LINE + b"\r\nQUIT\r\n")
    kind, head = reader.read_command()
    assert kind == TOO_LONG and len(head) == MAX_AUTH_LINE
    assert reader.read_command() == (LINE, b"QUIT")
    # SASL responses read with the AUTH limit
    reader = _reader(b"B" * 5000 + b"\r\n")
    assert reader.read_command(MAX_AUTH_LINE) == (LINE, b"B" * 5000)


def test_auth_settings_are_validated(tmp_path):
    path = tmp_path / "q.toml"
    for body, key in (('plaintext_services = [":99999"]', "auth.plaintext_services"),
                      ('plaintext_services = ["sub mission"]', "auth.plaintext_services"),
                      ("failure_delay = 61", "auth.failure_delay"),
                      ("max_failures = -1", "auth.max_failures")):
        path.write_text(f"[auth]\n{body}\n")
        with pytest.raises(qconfig.ConfigError) as err:
            qconfig.load(str(path))
        assert err.value.key == key
    path.write_text('[auth]\nplaintext_services = ["submission", ":587"]\n')
    assert qconfig.load(str(path)).auth.plaintext_services == ["submission", ":587"]


def test_redis_down_fails_closed(tmp_path, caplog):
    from helpers.redis import RedisServer
    from qsmtp.smtp.authlimit import LimiterUnavailable
    from qsmtp.state.redis import Connection, RedisLeases

    nobody = RedisServer(tmp_path)  # never started: nothing listens on its port
    limiter = FailureLimiter(RedisLeases(Connection(nobody.url), "auth"), 3, 60,
                             fail_closed=True)
    with pytest.raises(LimiterUnavailable):
        limiter.blocked("192.0.2.1")
    assert limiter.record("192.0.2.1") == 0
    assert "AUTH refused (454)" in caplog.text
