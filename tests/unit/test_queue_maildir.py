"""queue/maildir: byte-exact file layout, durability steps, failures."""

from __future__ import annotations

import errno
import os
import re

import pytest

from helpers.fakes import make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin import queue_maildir
from qsmtp.plugins.builtin.queue_maildir import QueueMaildir

MESSAGE = (b"From: a@a.test\nTo: u@example.test\nSubject: hi\n\n"
           b"line one\n.leading dot stays unstuffed\n\nlast line\n")


def load(tmp_path, maildir=None):
    path = tmp_path / "q.toml"
    path.write_text(f'[queue]\npath = "{maildir or tmp_path / "Maildir"}"\n')
    cfg = qconfig.load(str(path))
    return QueueMaildir(cfg, "queue/maildir", {}), cfg


def test_setup_creates_maildir_private(tmp_path):
    load(tmp_path)
    for sub in ("tmp", "new", "cur"):
        assert (tmp_path / "Maildir" / sub).is_dir()
    assert (tmp_path / "Maildir" / "new").stat().st_mode & 0o077 == 0


def test_setup_failure_is_plugin_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PluginError) as info:
        load(tmp_path, tmp_path / "file" / "Maildir")
    assert info.value.key == "queue.path"


def test_file_layout_is_byte_exact(tmp_path):
    plugin, cfg = load(tmp_path)
    sess = make_session(cfg, MESSAGE, rcpts=("u@example.test", "v@example.test"))
    sess.transaction.prepend_header("Received", "from x\n\tby y; date")
    result, message = plugin.hook_queue(sess)
    assert result is Result.OK
    files = os.listdir(tmp_path / "Maildir" / "new")
    assert len(files) == 1 and message == f"2.0.0 Ok: queued as {files[0]}"
    assert re.fullmatch(rf"\d+\.M\d+P{os.getpid()}Q\d+\.[^/:]+", files[0])
    data = (tmp_path / "Maildir" / "new" / files[0]).read_bytes()
    assert data == (b"Return-Path: <s@a.test>\n"
                    b"Delivered-To: <u@example.test>\n"
                    b"Delivered-To: <v@example.test>\n"
                    b"Received: from x\n\tby y; date\n" + MESSAGE)
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []
    assert (tmp_path / "Maildir" / "new" / files[0]).stat().st_mode & 0o777 == 0o600


def test_null_sender_and_unique_names(tmp_path):
    plugin, cfg = load(tmp_path)
    for _ in range(3):
        assert plugin.hook_queue(make_session(cfg, MESSAGE, sender=None))[0] is Result.OK
    files = os.listdir(tmp_path / "Maildir" / "new")
    assert len(set(files)) == 3
    assert all((tmp_path / "Maildir" / "new" / f).read_bytes().startswith(b"Return-Path: <>\n")
               for f in files)


def no_tmpfile(monkeypatch):
    """A file system without O_TMPFILE: the tmp/ + rename way."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(queue_maildir.os, "open", fake_open)


def test_without_o_tmpfile_the_tmp_dir_way(tmp_path, monkeypatch):
    plugin, cfg = load(tmp_path)
    no_tmpfile(monkeypatch)
    renamed = []
    real_rename = os.rename
    monkeypatch.setattr(queue_maildir.os, "rename",
                        lambda a, b: renamed.append(a) or real_rename(a, b))
    for _ in range(2):
        assert plugin.hook_queue(make_session(cfg, MESSAGE))[0] is Result.OK
    assert plugin._unnamed is False and len(renamed) == 2
    assert all("/Maildir/tmp/" in path for path in renamed)
    assert len(os.listdir(tmp_path / "Maildir" / "new")) == 2
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []


@pytest.mark.parametrize("failing", ["write", "fsync", "link", "dirsync",
                                     "tmp-write", "tmp-rename"])
def test_os_errors_leave_nothing_and_tempfail(tmp_path, monkeypatch, failing):
    plugin, cfg = load(tmp_path)

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    if failing.startswith("tmp-"):
        no_tmpfile(monkeypatch)
    if failing in ("write", "tmp-write"):
        monkeypatch.setattr(queue_maildir, "envelope_headers", boom)
    elif failing == "fsync":
        monkeypatch.setattr(queue_maildir.os, "fsync", boom)
    elif failing == "link":
        monkeypatch.setattr(queue_maildir.os, "link", boom)
    elif failing == "tmp-rename":
        monkeypatch.setattr(queue_maildir.os, "rename", boom)
    else:
        monkeypatch.setattr(queue_maildir, "_fsync_dir", boom)
    result, message = plugin.hook_queue(make_session(cfg, MESSAGE))
    assert result is Result.DENYSOFT and message.startswith("4.3.0")
    assert os.listdir(tmp_path / "Maildir" / "new") == []
    assert os.listdir(tmp_path / "Maildir" / "tmp") == []


def test_created_maildir_belongs_to_the_service_user(tmp_path):
    import pwd
    path = tmp_path / "q.toml"
    path.write_text(f'[server]\nuser = "nobody"\n[queue]\npath = "{tmp_path}/md"\n')
    QueueMaildir(qconfig.load(str(path)), "queue/maildir", {})
    nobody = pwd.getpwnam("nobody").pw_uid
    assert (tmp_path / "md").stat().st_uid == nobody
    assert (tmp_path / "md" / "new").stat().st_uid == nobody


def test_unknown_service_user_is_plugin_error(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text(f'[server]\nuser = "no-such-user-x"\n[queue]\npath = "{tmp_path}/md"\n')
    with pytest.raises(PluginError):
        QueueMaildir(qconfig.load(str(path)), "queue/maildir", {})


def test_envelope_headers_escape_hostile_addresses(tmp_path):
    hostile = "j\x1b[2J\u0085\u2028" + b"\xed\xa0\x80".decode("utf-8", "surrogateescape")
    plugin, cfg = load(tmp_path)
    sess = make_session(cfg, MESSAGE, sender=f"{hostile}@a.test",
                        rcpts=(f"{hostile}@example.test",))
    head = queue_maildir.envelope_headers(sess.transaction)
    escaped = b"j\\x1B[2J\\x85\\u2028\\xED\\xA0\\x80"
    assert head == (b"Return-Path: <" + escaped + b"@a.test>\n"
                    b"Delivered-To: <" + escaped + b"@example.test>\n")
    head.decode("utf-8")  # valid UTF-8 throughout
