"""queue/maildir on a real tiny tmpfs: full disk and read-only -> 451 4.3.0,
nothing left behind; once space is back the next message is stored."""

from __future__ import annotations

import os

import pytest

from helpers.fakes import make_session
from helpers.tinyfs import fill, remount, tiny_tmpfs
from qsmtp import config as qconfig
from qsmtp.plugins.api import Result
from qsmtp.plugins.builtin.queue_maildir import QueueMaildir

MESSAGE = b"Subject: test\n\n" + b"x" * 60 + b"\n"


@pytest.fixture()
def small_fs(tmp_path):
    with tiny_tmpfs(tmp_path / "mnt", "256k", "0700") as mnt:
        yield mnt


def plugin_for(tmp_path, maildir):
    path = tmp_path / "q.toml"
    path.write_text(f'[queue]\npath = "{maildir}"\n')
    cfg = qconfig.load(str(path))
    return QueueMaildir(cfg, "queue/maildir", {}), cfg


def listing(maildir):
    return {sub: os.listdir(maildir / sub) for sub in ("tmp", "new")}


def test_disk_full_then_recovered(tmp_path, small_fs):
    maildir = small_fs / "Maildir"
    plugin, cfg = plugin_for(tmp_path, maildir)
    filler = fill(small_fs)
    result, message = plugin.hook_queue(make_session(cfg, MESSAGE))
    assert result is Result.DENYSOFT and message.startswith("4.3.0")
    assert listing(maildir) == {"tmp": [], "new": []}
    filler.unlink()
    result, message = plugin.hook_queue(make_session(cfg, MESSAGE))
    assert result is Result.OK
    (stored,) = os.listdir(maildir / "new")
    assert (maildir / "new" / stored).read_bytes().endswith(MESSAGE)
    assert os.listdir(maildir / "tmp") == []


def test_big_message_fills_disk_midway(tmp_path, small_fs):
    maildir = small_fs / "Maildir"
    plugin, cfg = plugin_for(tmp_path, maildir)
    big = b"Subject: big\n\n" + b"y" * (400 * 1024) + b"\n"
    result, _ = plugin.hook_queue(make_session(cfg, big))
    assert result is Result.DENYSOFT
    assert listing(maildir) == {"tmp": [], "new": []}


def test_read_only_filesystem(tmp_path, small_fs):
    maildir = small_fs / "Maildir"
    plugin, cfg = plugin_for(tmp_path, maildir)
    remount(small_fs, "ro")
    result, message = plugin.hook_queue(make_session(cfg, MESSAGE))
    assert result is Result.DENYSOFT and message.startswith("4.3.0")
    assert listing(maildir) == {"tmp": [], "new": []}
    remount(small_fs, "rw")
    assert plugin.hook_queue(make_session(cfg, MESSAGE))[0] is Result.OK
