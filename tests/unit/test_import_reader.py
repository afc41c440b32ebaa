"""qsmtp.ctl.importer.reader: a qpsmtpd config directory read the way
Qpsmtpd.pm's _config_from_file reads it, and hostile inputs refused with one
clear InputError (never a traceback, never unbounded memory)."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from qsmtp.ctl.importer import reader
from qsmtp.ctl.importer.reader import InputError, QpsmtpdDir


def write(directory, name, text):
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_comments_blank_lines_and_trimming_as_qpsmtpd(tmp_path):
    write(tmp_path, "badmailfrom", "# comment\n\n   \n  a@b.example  why not # kept\n"
                                   "\t# indented comment\n@c.example\n")
    qp = QpsmtpdDir(str(tmp_path))
    assert qp.texts("badmailfrom") == ["a@b.example  why not # kept", "@c.example"]
    assert [line.lineno for line in qp.lines("badmailfrom")] == [4, 6]
    assert qp.first("badmailfrom").origin == f"{tmp_path}/badmailfrom:4"
    assert qp.lines("absent") == [] and qp.first("absent") is None


def test_include_files_relative_absolute_and_nested(tmp_path):
    other = tmp_path / "elsewhere"
    write(other, "deep", "deep.example\n")
    write(tmp_path, "more", f"more.example\n$include {other}/deep\n")
    write(tmp_path, "rcpthosts", "first.example\n$include more\nlast.example\n")
    qp = QpsmtpdDir(str(tmp_path))
    lines = qp.lines("rcpthosts")
    assert [line.text for line in lines] == ["first.example", "more.example",
                                             "deep.example", "last.example"]
    assert lines[2].origin == f"{other}/deep:1"


def test_include_directory_sorted_regular_visible_files_only(tmp_path):
    write(tmp_path, "conf.d/20-b", "b\n")
    write(tmp_path, "conf.d/10-a", "a\n$include sub.d\n")
    write(tmp_path, "conf.d/.hidden", "hidden\n")
    (tmp_path / "conf.d" / "subdir").mkdir()
    write(tmp_path, "sub.d/x", "nested\n")
    write(tmp_path, "plugins", "$include conf.d\n")
    assert QpsmtpdDir(str(tmp_path)).texts("plugins") == ["a", "nested", "b"]


def test_diamond_includes_are_not_a_loop(tmp_path):
    write(tmp_path, "common", "c\n")
    write(tmp_path, "left", "$include common\n")
    write(tmp_path, "plugins", "$include left\n$include common\n")
    assert QpsmtpdDir(str(tmp_path)).texts("plugins") == ["c", "c"]


@pytest.mark.parametrize("files", [
    {"plugins": "$include plugins\n"},
    {"plugins": "x\n$include a\n", "a": "$include b\n", "b": "$include a\n"},
    {"plugins": "$include d\n", "d/one": "$include d\n"},
])
def test_include_loops_are_refused(tmp_path, files):
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(InputError, match="circular \\$include"):
        QpsmtpdDir(str(tmp_path)).lines("plugins")


def test_include_depth_is_bounded(tmp_path):
    for index in range(reader.MAX_DEPTH + 3):
        write(tmp_path, f"f{index}", f"$include f{index + 1}\n")
    write(tmp_path, f"f{reader.MAX_DEPTH + 3}", "end\n")
    with pytest.raises(InputError, match="nested deeper"):
        QpsmtpdDir(str(tmp_path)).lines("f0")


def test_missing_include_names_file_and_line(tmp_path):
    write(tmp_path, "plugins", "dnsbl\n$include nowhere\n")
    with pytest.raises(InputError) as info:
        QpsmtpdDir(str(tmp_path)).lines("plugins")
    assert str(info.value) == f"{tmp_path}/plugins:2: $include {tmp_path}/nowhere: no such file"


@pytest.mark.parametrize("data, reason", [
    (b"dnsbl\n\x00\x01\x02\xff" * 50, "binary data"),
    (b"dnsbl\nrhsbl \xff\xfe\n", "not UTF-8 text"),
])
def test_binary_junk_is_refused(tmp_path, data, reason):
    write(tmp_path, "plugins", data)
    with pytest.raises(InputError, match=reason):
        QpsmtpdDir(str(tmp_path)).lines("plugins")


def test_invalid_utf8_names_the_line(tmp_path):
    write(tmp_path, "me", b"# fine\n\nmx.\xe9xample\n")
    with pytest.raises(InputError) as info:
        QpsmtpdDir(str(tmp_path)).lines("me")
    assert info.value.line == 3


def test_ten_megabyte_file_refused_with_bounded_memory(tmp_path):
    path = tmp_path / "badmailfrom"
    with open(path, "wb") as handle:
        for _ in range(10):
            handle.write(b"spam@example.com\n" * (1024 * 1024 // 17 + 1))
    assert path.stat().st_size >= 10 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="larger than 4 MiB"):
            QpsmtpdDir(str(tmp_path)).lines("badmailfrom")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < reader.MAX_FILE_BYTES + 2 * 1024 * 1024, peak


def test_fifo_and_directory_are_not_config_files(tmp_path):
    os.mkfifo(tmp_path / "plugins")  # opening it must not hang
    (tmp_path / "me").mkdir()
    qp = QpsmtpdDir(str(tmp_path))
    for name in ("plugins", "me"):
        with pytest.raises(InputError, match="not a regular file|Is a directory"):
            qp.lines(name)


def test_unreadable_directory_arguments(tmp_path):
    with pytest.raises(InputError, match="No such file"):
        QpsmtpdDir(str(tmp_path / "missing"))
    write(tmp_path, "file", "x\n")
    with pytest.raises(InputError, match="not a directory"):
        QpsmtpdDir(str(tmp_path / "file"))
