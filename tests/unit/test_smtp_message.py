"""smtp/message.py: header block detection, spooling, chunks."""

from __future__ import annotations

import pytest

from qsmtp.smtp.message import MessageBody

MESSAGE = b"Subject: a\nFrom: b\n\nline one\n\nline two\n"


@pytest.mark.parametrize("split", range(0, len(MESSAGE) + 1))
def test_header_block_found_at_any_split(split):
    body = MessageBody()
    done = [body.write(MESSAGE[:split]), body.write(MESSAGE[split:])]
    assert done.count(True) == 1 and not body.finish()
    assert body.header_block == b"Subject: a\nFrom: b\n\n"
    assert b"".join(body.iter_chunks()) == MESSAGE
    assert body.size == len(MESSAGE)


def test_no_blank_line_is_all_header():
    body = MessageBody()
    assert not body.write(b"Subject: a\n")
    assert body.finish()
    assert body.header_block == b"Subject: a\n"
    assert b"".join(body.iter_chunks()) == b"Subject: a\n"


def test_empty_header_section():
    body = MessageBody()
    assert body.write(b"\nbody\n")
    assert body.header_block == b"\n"


def test_spools_large_bodies_to_disk_and_header_is_editable():
    body = MessageBody(spool_threshold=1000)
    body.write(b"Subject: big\n\n")
    for _ in range(100):
        body.write(b"x" * 99 + b"\n")
    assert body.spooled
    body.header_block = b"X-New: 1\n" + body.header_block
    data = b"".join(body.iter_chunks())
    assert data.startswith(b"X-New: 1\nSubject: big\n\n") and len(data) == 23 + 10000
    assert data == b"".join(body.iter_chunks())  # iterable twice
    assert body.headers()["Subject"] == "big"
    body.close()


@pytest.mark.parametrize("threshold", [1 << 18, 10])  # in memory; spooled (sendfile)
def test_write_to_stores_prefix_and_whole_message(tmp_path, threshold):
    body = MessageBody(spool_threshold=threshold)
    lines = [b"Subject: a\n", b"\n"] + [b"line %d\n" % i for i in range(2000)]
    for line in lines:  # one part per line: more parts than one writev takes
        body.write(line)
    body.finish()
    assert body.spooled == (threshold == 10)
    path = tmp_path / "out"
    with open(path, "wb") as out:
        body.write_to(out.fileno(), prefix=b"Return-Path: <>\n")
    assert path.read_bytes() == b"Return-Path: <>\n" + b"".join(lines)
    assert b"".join(body.iter_chunks()) == b"".join(lines)  # still readable after
    body.close()
