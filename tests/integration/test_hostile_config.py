"""Hostile or careless start-up values (issue 12 items 2 and 3): one line,
exit 78, and nothing created: no segment, no directory, no process."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


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
