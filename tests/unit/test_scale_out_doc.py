"""docs/SCALE-OUT.md shows the configs tests/cluster/ runs, not copies that
could drift: the shipped etc/scale-out files, verbatim below their header."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "SCALE-OUT.md").read_text()


@pytest.mark.parametrize("name", ["haproxy.cfg", "qsmtp-host.toml"])
def test_doc_carries_the_shipped_config(name):
    lines = (ROOT / "etc" / "scale-out" / name).read_text().splitlines()
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)  # the file's own header says where it is used
    body = "\n".join(lines)
    assert body and body in DOC, f"docs/SCALE-OUT.md does not show etc/scale-out/{name}"


def test_doc_table_names_the_tests_that_measure_it():
    for test in ("tests/cluster/test_cluster_load.py", "tests/cluster/test_cluster_failover.py"):
        assert test in DOC and (ROOT / test).is_file()
