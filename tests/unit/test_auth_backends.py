"""auth/file and auth/checkpassword as plugins (real files, a real
checkpassword program run through the qmail fd-3 protocol)."""

from __future__ import annotations

import logging
import os
import sys
import time

import pytest

from qsmtp import config as qconfig
from qsmtp.plugins.api import DECLINED, DENY, DENYSOFT, OK, PluginError
from qsmtp.plugins.builtin._auth import (
    HashError,
    PasswdFormatError,
    ScryptHash,
    hash_password,
    parse_passwd,
)
from qsmtp.plugins.builtin.auth_checkpassword import AuthCheckpassword
from qsmtp.plugins.builtin.auth_file import AuthFile
from qsmtp.smtp.state import ConnectionInfo, Session

CONFIG = qconfig.load(None)


def session() -> Session:
    return Session(conn=ConnectionInfo("192.0.2.7", 4711, "127.0.0.1", 25), config=CONFIG)


def result(plugin, user, password, mechanism="PLAIN"):
    value = plugin.hook_auth(session(), mechanism, user, password)
    return value[0] if isinstance(value, tuple) else value


# -- hashes ----------------------------------------------------------------------
def test_hash_round_trip_and_format():
    stored = hash_password("s3cret pässword", ln=10)
    assert stored.startswith("$scrypt$ln=10,r=8,p=1$")
    parsed = ScryptHash.parse(stored)
    assert parsed.matches("s3cret pässword")
    assert not parsed.matches("s3cret passwörd")
    assert not parsed.matches("")
    assert str(parsed) == stored


def test_same_password_different_salt():
    one, two = hash_password("pw", ln=10), hash_password("pw", ln=10)
    assert one != two
    assert ScryptHash.parse(one).matches("pw") and ScryptHash.parse(two).matches("pw")


def test_default_cost_is_strong():
    parsed = ScryptHash.parse(hash_password("pw"))
    assert (parsed.ln, parsed.r, parsed.p) == (15, 8, 1) and len(parsed.salt) == 16


@pytest.mark.parametrize("text", ["", "plain", "$scrypt$ln=99,r=8,p=1$AAAAAAAAAAA=$" + "A" * 44,
                                  "$scrypt$ln=10,r=8,p=1$!!$AAAA", "$2y$10$abcdefg",
                                  "$scrypt$ln=10,r=8,p=1$AAAA$" + "A" * 44])
def test_bad_hashes_rejected(text):
    with pytest.raises(HashError):
        ScryptHash.parse(text)


def test_passwd_parse_errors_name_the_line():
    good = hash_password("x", ln=10)
    lines, users = parse_passwd(f"# comment\n\nalice:{good}\n", "f")
    assert list(users) == ["alice"] and lines[0] == "# comment"
    for text, where in ((f"alice:{good}\nalice:{good}\n", "f:2"), ("bob\n", "f:1"),
                        ("bob:nothash\n", "f:1"), (f"b b:{good}\n", "f:1")):
        with pytest.raises(PasswdFormatError, match=where):
            parse_passwd(text, "f")


# -- auth/file -----------------------------------------------------------------------
@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users"
    path.write_text(f"alice:{hash_password('s3cret', ln=10)}\n")
    return path


def test_auth_file_decisions(users_file):
    plugin = AuthFile(CONFIG, "auth/file", {"path": str(users_file)})
    assert result(plugin, "alice", "s3cret") is OK
    assert result(plugin, "alice", "s3cret", "LOGIN") is OK
    assert result(plugin, "alice", "wrong") is DENY
    assert result(plugin, "Alice", "s3cret") is DECLINED  # unknown: next backend
    assert result(plugin, "alice", "s3cret", "CRAM-MD5") is DECLINED


def test_auth_file_rereads_changed_file(users_file, caplog):
    plugin = AuthFile(CONFIG, "auth/file", {"path": str(users_file)})
    tmp = users_file.with_suffix(".new")
    tmp.write_text(f"bob:{hash_password('pw2', ln=10)}\n")
    os.rename(tmp, users_file)
    assert result(plugin, "bob", "pw2") is OK
    assert result(plugin, "alice", "s3cret") is DECLINED
    # A malformed new file: logged, the last good contents stay in use.
    users_file.write_text("garbage line\n")
    with caplog.at_level(logging.ERROR):
        assert result(plugin, "bob", "pw2") is OK
    assert "keeping the previous contents" in caplog.text
    users_file.unlink()
    assert result(plugin, "bob", "pw2") is DENYSOFT  # unreadable: try later


def test_auth_file_load_errors(tmp_path, users_file):
    with pytest.raises(PluginError, match="path: required"):
        AuthFile(CONFIG, "auth/file", {})
    with pytest.raises(PluginError, match="cannot read"):
        AuthFile(CONFIG, "auth/file", {"path": str(tmp_path / "missing")})
    users_file.write_text("alice:$scrypt$broken\n")
    with pytest.raises(PluginError, match=r"users:1: user 'alice'"):
        AuthFile(CONFIG, "auth/file", {"path": str(users_file)})


# -- auth/checkpassword ------------------------------------------------------------------
CHECKPASSWORD = """#!{python}
import os, sys, time
data = b""
while True:
    chunk = os.read(3, 4096)
    if not chunk:
        break
    data += chunk
user, password, stamp, rest = data.split(b"\\0")
with open({record!r}, "ab") as out:
    out.write(b"|".join([user, password, stamp, rest,
                         os.environ.get("TCPREMOTEIP", "").encode(),
                         " ".join(sorted(os.environ)).encode(),
                         " ".join(sys.argv[1:]).encode()]) + b"\\n")
if user == b"slow":
    time.sleep(30)
if user == b"temp":
    sys.exit(111)
if user == b"alice" and password == b"s3cr\\xc3\\xa9t":
    os.execv(sys.argv[1], sys.argv[1:])
sys.exit(1)
"""


@pytest.fixture
def checkpassword(tmp_path):
    record = tmp_path / "record"
    script = tmp_path / "checkpassword"
    script.write_text(CHECKPASSWORD.format(python=sys.executable, record=str(record)))
    script.chmod(0o755)
    return str(script), record


def test_checkpassword_protocol(checkpassword, monkeypatch):
    monkeypatch.setenv("QSMTP_TEST_SECRET", "must not leak")
    program, record = checkpassword
    plugin = AuthCheckpassword(CONFIG, "auth/checkpassword", {"program": program})
    before = int(time.time())
    assert result(plugin, "alice", "s3cré t".replace(" ", "")) is OK
    assert result(plugin, "alice", "wrong") is DENY
    assert result(plugin, "temp", "x") is DENYSOFT
    lines = record.read_bytes().splitlines()
    user, password, stamp, rest, ip, env, argv = lines[0].split(b"|")
    assert (user, password, rest, ip) == (b"alice", "s3crét".encode(), b"", b"192.0.2.7")
    assert before <= int(stamp) <= time.time()
    assert argv == b"/bin/true"
    # The connection variables and PATH, nothing else of the server's.
    names = set(env.decode().split())
    assert {"PATH", "TCPLOCALIP", "TCPLOCALPORT", "TCPREMOTEHOST", "TCPREMOTEIP",
            "TCPREMOTEPORT"} <= names
    assert "QSMTP_TEST_SECRET" not in names


def test_checkpassword_runs_args_on_success(checkpassword):
    program, _ = checkpassword
    plugin = AuthCheckpassword(CONFIG, "auth/checkpassword",
                               {"program": program, "args": ["/bin/false"]})
    assert result(plugin, "alice", "s3crét") is DENY  # the sub-program's exit code counts


def test_checkpassword_timeout_kills_and_defers(checkpassword):
    program, _ = checkpassword
    plugin = AuthCheckpassword(CONFIG, "auth/checkpassword",
                               {"program": program, "timeout": 0.5})
    started = time.monotonic()
    assert result(plugin, "slow", "x") is DENYSOFT
    assert time.monotonic() - started < 3


def test_checkpassword_load_errors(tmp_path, checkpassword):
    for options, match in (({}, "program: required"),
                           ({"program": "relative/path"}, "absolute"),
                           ({"program": str(tmp_path / "none")}, "not executable"),
                           ({"program": checkpassword[0], "timeout": 99.0}, "hook_timeout")):
        with pytest.raises(PluginError, match=match):
            AuthCheckpassword(CONFIG, "auth/checkpassword", options)
