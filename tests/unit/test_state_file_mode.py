"""State files hold client IPs and addresses: never world-readable
(issue 12.3), also when an older version left one 0644."""

from __future__ import annotations

import os
import stat

from qsmtp.state.sqlitedb import LazyDB


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_state_files_are_not_world_readable(tmp_path):
    old = os.umask(0o022)
    try:
        db = LazyDB(str(tmp_path / "state" / "karma.sqlite"), "CREATE TABLE t (x);")
        db.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
    finally:
        os.umask(old)
    files = sorted((tmp_path / "state").iterdir())
    assert [f.name for f in files][:1] == ["karma.sqlite"]
    for path in files:  # the database and its -wal / -shm
        assert _mode(path) & 0o007 == 0, (path, oct(_mode(path)))


def test_a_world_readable_state_file_is_tightened(tmp_path):
    path = tmp_path / "greylisting.sqlite"
    path.touch()
    path.chmod(0o644)
    LazyDB(str(path), "CREATE TABLE t (x);").connection()
    assert _mode(path) == 0o640
