"""Hostile or careless start-up values (issue 12 items 2 and 3): one line,
exit 78, and nothing created: no segment, no directory, no process."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import as_user


def _refused(srv, *, key: str) -> str:
    result = srv.run_once(timeout=20)
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and key in result.stderr, result.stderr
    # Nothing was sized from the value: the registry (made after the runtime
    # dir) never existed.  Today's code zero-fills a 16 GB segment here.
    assert not srv.runtime_dir.exists()
    return result.stderr


@pytest.mark.parametrize("value", ["1000000000000000000000", "99999999"])
def test_huge_children_is_one_line_78_and_allocates_nothing(serve, value):
    srv = serve(start=False, flags=["--children", value])
    line = _refused(srv, key="server.children")
    assert "must be between 1 and 4096" in line


def test_pid_file_in_missing_directory_is_78_and_creates_nothing(serve):
    missing = Path(serve(start=False, name="p").dir) / "nonexistent"
    srv = serve(start=False, name="s", flags=["--pid-file", str(missing / "dir" / "x.pid")])
    line = _refused(srv, key="server.pid_file")
    assert f"{missing / 'dir'} does not exist" in line
    assert not missing.exists()


@pytest.fixture
def nobody_base():
    with as_user.shared_dir("qsmtp-paths-") as base:
        yield base


@pytest.mark.parametrize("which", ["maildir", "state_dir"])
def test_user_who_cannot_write_a_path_is_refused_naming_both(serve, nobody_base, which):
    target = nobody_base / which
    for sub in ("", "tmp", "new", "cur"):
        (target / sub).mkdir(exist_ok=True)
        (target / sub).chmod(0o755)  # root's: nobody may read, not write
    keys = {"state_dir": str(target)} if which == "state_dir" else {}
    srv = serve(start=False, name=str(nobody_base / "s"), flags=["--user", "nobody"],
                **keys)
    if which == "maildir":
        text = srv.config_path.read_text().replace(str(srv.maildir), str(target))
        srv.config_path.write_text(text)
    key = "queue.path" if which == "maildir" else "server.state_dir"
    line = _refused(srv, key=key)
    assert f"{target} is not writable by user nobody" in line
