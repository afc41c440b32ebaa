"""qsmtpctl user add|passwd|del|list: the password file edited safely
(CliRunner for the dialogue, real processes for the locking)."""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys

from click.testing import CliRunner

from qsmtp.ctl.cli import cli
from qsmtp.plugins.builtin._auth import parse_passwd

QSMTPCTL = str(pathlib.Path(sys.executable).with_name("qsmtpctl"))


def run(*args, input=None):
    args = list(args)
    if args[:2] in (["user", "add"], ["user", "passwd"]) and "--cost" not in args:
        args += ["--cost", "10"]  # cheap hashes; the default cost is checked once
    return CliRunner(mix_stderr=False).invoke(cli, args, input=input)


def users(path):
    return parse_passwd(path.read_text(), str(path))[1]


def test_add_passwd_del_round_trip(tmp_path):
    path = tmp_path / "users"
    res = run("user", "add", "alice", "-f", str(path), "--password-stdin", input="first pw\n")
    assert res.exit_code == 0, res.stderr
    assert users(path)["alice"].matches("first pw") and users(path)["alice"].ln == 10
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    res = run("user", "passwd", "alice", "-f", str(path), "--password-stdin", "--cost", "15",
              input="second\r\n")
    assert res.exit_code == 0
    stored = users(path)["alice"]
    assert stored.matches("second") and not stored.matches("first pw") and stored.ln == 15
    assert run("user", "list", "-f", str(path)).output == "alice\n"
    assert run("user", "del", "alice", "-f", str(path)).exit_code == 0
    assert users(path) == {}
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["users", "users.lock"]  # no temp files left behind


def test_prompt_asks_twice_and_hides(tmp_path):
    path = tmp_path / "users"
    res = run("user", "add", "bob", "-f", str(path), input="pw1\npw1\n")
    assert res.exit_code == 0 and users(path)["bob"].matches("pw1")
    assert "pw1" not in res.output + res.stderr
    res = run("user", "passwd", "bob", "-f", str(path), input="aaa\nbbb\n")
    assert res.exit_code != 0 and users(path)["bob"].matches("pw1")


def test_refusals(tmp_path):
    path = tmp_path / "users"
    path.write_text("# our users\n")
    assert run("user", "add", "a", "-f", str(path), "--password-stdin", input="x\n").exit_code == 0
    res = run("user", "add", "a", "-f", str(path), "--password-stdin", input="y\n")
    assert res.exit_code == 1 and "already exists" in res.stderr
    assert run("user", "passwd", "nobody", "-f", str(path), "--password-stdin",
               input="y\n").exit_code == 1
    assert run("user", "del", "nobody", "-f", str(path)).exit_code == 1
    res = run("user", "add", "c:d", "-f", str(path), "--password-stdin", input="y\n")
    assert res.exit_code == 1 and "':'" in res.stderr
    res = run("user", "add", "e", "-f", str(path), "--password-stdin", input="\n")
    assert res.exit_code == 1 and "empty password" in res.stderr
    # never a password on the command line
    assert run("user", "add", "f", "-f", str(path), "--password", "x").exit_code == 2
    assert path.read_text().startswith("# our users\na:$scrypt$")  # comments kept
    assert list(users(path)) == ["a"]


def test_file_from_the_config(tmp_path):
    path = tmp_path / "users"
    config = tmp_path / "qsmtp.toml"
    config.write_text(f'[[plugins]]\nname = "auth/file"\npath = "{path}"\n')
    res = run("user", "add", "carol", "--config", str(config), "--password-stdin", input="x\n")
    assert res.exit_code == 0 and "carol" in users(path)
    assert run("--config", str(config), "user", "list").output == "carol\n"
    config.write_text("[server]\n")
    res = run("user", "list", "--config", str(config))
    assert res.exit_code == 78 and "no auth/file plugin" in res.stderr


def test_concurrent_edits_lose_nothing(tmp_path):
    """Six real qsmtpctl processes add users at once: the lock serialises
    the read-modify-write, so all six are in the file."""
    path = tmp_path / "users"
    procs = [subprocess.Popen([QSMTPCTL, "user", "add", f"u{i}", "-f", str(path),
                               "--password-stdin", "--cost", "10"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(6)]
    for i, proc in enumerate(procs):
        _, err = proc.communicate(f"pw{i}\n".encode(), timeout=60)
        assert proc.returncode == 0, err
    table = users(path)
    assert sorted(table) == [f"u{i}" for i in range(6)]
    assert table["u3"].matches("pw3")
    assert os.stat(path).st_mode & 0o777 == 0o640
