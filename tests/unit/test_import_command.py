"""`qsmtpctl import-qpsmtpd` as users run it: Debian's installed /etc/qpsmtpd
(package qpsmtpd, scripts/apt/test-import.txt), exit codes 0/1/78, never
overwriting without --force, no side effects of the validation, and an
unreadable input file for a non-root user."""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import tempfile
import tomllib

import pytest
from click.testing import CliRunner

from helpers import as_user
from qsmtp.ctl.cli import cli

DEBIAN = "/etc/qpsmtpd"
QSMTPCTL = os.path.join(os.path.dirname(sys.executable), "qsmtpctl")


def run(*args):
    return CliRunner().invoke(cli, ["import-qpsmtpd", *args])


def clean_dir(tmp_path):
    directory = tmp_path / "qp"
    directory.mkdir()
    maildir = tmp_path / "never-created"
    (directory / "me").write_text("mx.example.com\n")
    (directory / "rcpthosts").write_text("example.com\n")
    (directory / "relayclients").write_text("10.\n")
    (directory / "badmailfrom").write_text("@spam.example\n")
    (directory / "plugins").write_text(f"check_badmailfrom\nrcpt_ok\nqueue/maildir {maildir}\n")
    return directory, maildir


def test_debian_etc_qpsmtpd(tmp_path):
    out = tmp_path / "qsmtp.toml"
    result = run(DEBIAN, "-o", str(out))
    assert result.exit_code == 1, result.output  # 'unset' domain, no queue plugin
    doc = tomllib.loads(out.read_text())
    assert doc["relay"]["domains"] == ["unset"]
    assert doc["relay"]["clients"] == ["127.0.0.1/32", "::1/128"]
    assert [p["name"] for p in doc["plugins"]] == ["earlytalker", "helo", "badmailfrom",
                                                   "badrcptto", "loop"]
    text = out.read_text()
    assert '"unset",  # /etc/qpsmtpd/debian-rcpthosts:' in text  # through the $include
    assert "needs a human (2):" in result.output
    assert "/etc/qpsmtpd/debian-rcpthosts:" in result.output
    assert "no queue plugin" in result.output
    assert "result: valid (qsmtpctl config check passes)" in result.output


def test_clean_import_exits_0_and_validation_creates_nothing(tmp_path):
    directory, maildir = clean_dir(tmp_path)
    out = tmp_path / "qsmtp.toml"
    result = run(str(directory), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "needs a human (0):" in result.output
    assert not maildir.exists()
    assert sorted(os.listdir(tmp_path)) == ["qp", "qsmtp.toml"]  # no temp files left
    check = CliRunner().invoke(cli, ["config", "check", str(out)])
    assert check.exit_code == 0, check.output


def test_existing_file_needs_force(tmp_path):
    directory, _ = clean_dir(tmp_path)
    out = tmp_path / "qsmtp.toml"
    out.write_text("# mine\n")
    result = run(str(directory), "-o", str(out))
    assert result.exit_code == 1
    assert "exists: not overwritten (use --force)" in result.output
    assert out.read_text() == "# mine\n"
    assert run(str(directory), "-o", str(out), "--force").exit_code == 0
    assert "[relay]" in out.read_text()


def test_stdout_output_keeps_the_report_apart(tmp_path):
    directory, _ = clean_dir(tmp_path)
    result = subprocess.run([QSMTPCTL, "import-qpsmtpd", str(directory), "-o", "-"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["relay"]["clients"] == ["10.0.0.0/8", "::1/128"]
    assert "carried over" in result.stderr and "Traceback" not in result.stderr


def test_unreadable_input_exits_78_and_writes_nothing(tmp_path):
    directory, _ = clean_dir(tmp_path)
    (directory / "rcpthosts").write_text("$include rcpthosts\n")
    out = tmp_path / "qsmtp.toml"
    result = run(str(directory), "-o", str(out))
    assert result.exit_code == 78
    assert "circular $include" in result.output and "Traceback" not in result.output
    assert not out.exists()
    assert run(str(tmp_path / "missing"), "-o", str(out)).exit_code == 78


@pytest.fixture
def open_tmp():
    """A directory nobody can traverse (pytest's tmp_path is root's, 0700)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="qsmtp-import-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def test_permission_denied_as_a_user(open_tmp):
    directory, _ = clean_dir(open_tmp)
    directory.chmod(0o755)
    for name in os.listdir(directory):
        (directory / name).chmod(0 if name == "badmailfrom" else 0o644)
    if os.geteuid() == 0:  # root reads mode-000 files: run as nobody
        owner = pwd.getpwnam("root").pw_uid
        os.chown(directory / "badmailfrom", owner, 0)
        # from a copy nobody can read: the checkout may be in a 0700 directory
        argv, env = [*as_user.setpriv("nobody", "nogroup"), *as_user.qsmtpctl()], as_user.env()
    else:
        argv, env = [QSMTPCTL], None
    result = subprocess.run(argv + ["import-qpsmtpd", str(directory),
                                    "-o", str(open_tmp / "out.toml")],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 78, result.stderr
    assert result.stderr.strip() == (f"qsmtpctl: cannot import {directory}: "
                                     f"{directory}/badmailfrom: Permission denied")
    assert not (open_tmp / "out.toml").exists()


def test_help_documents_the_command():
    result = CliRunner().invoke(cli, ["import-qpsmtpd", "--help"])
    assert result.exit_code == 0
    for text in ("$include", "--force", "--defaults", "Exit codes: 0", "78"):
        assert text in result.output


def test_defaults_file_carries_prefork_flags(tmp_path):
    directory, _ = clean_dir(tmp_path)
    unit = tmp_path / "qpsmtpd.service"
    unit.write_text("[Service]\nExecStart=/usr/bin/qpsmtpd-prefork --port 2525 "
                    "--children 12 --idle-children 3 --max-from-ip 4 --user nobody\n")
    out = tmp_path / "qsmtp.toml"
    result = run(str(directory), "-o", str(out), "--defaults", str(unit))
    assert result.exit_code == 0, result.output
    doc = tomllib.loads(out.read_text())
    assert doc["server"] == {"me": "mx.example.com", "port": 2525, "children": 12,
                             "idle_children": 3, "max_from_ip": 4, "user": "nobody"}
    assert f"children = 12  # {unit}:2" in out.read_text()
    missing = run(str(directory), "-o", str(tmp_path / "x.toml"),
                  "--defaults", str(tmp_path / "nope"))
    assert missing.exit_code == 78 and "No such file" in missing.output
    assert not (tmp_path / "x.toml").exists()
