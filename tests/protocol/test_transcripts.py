"""Runs every tests/protocol/transcripts/*.txt against a real loopback
server (run_session + App.load). Format: see protocol_harness.py."""

from __future__ import annotations

import pathlib
import re

import pytest

from protocol_harness import Client, Server, parse_transcript, plugins_toml, unescape, write_config

HERE = pathlib.Path(__file__).parent
TRANSCRIPTS = sorted((HERE / "transcripts").glob("*.txt"))
_TRACE = re.compile(rb"\A(?:(?:Return-Path|Delivered-To|Received):[^\n]*\n(?:[ \t][^\n]*\n)*)*")


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    script = parse_transcript(path)
    server = Server(write_config(tmp_path, script.overrides, tuple(script.drop),
                                 extra=plugins_toml(script.plugins)))
    client = Client(server.port)
    pending: list[bytes] = []
    try:
        for index, (kind, text) in enumerate(script.steps):
            where = f"{path.name} step {index + 1} ({kind} {text})"
            if kind == "C:":
                pending.append(unescape(text) + b"\r\n")
                continue
            if kind == "C<":
                pending.append(unescape(text))
                continue
            if pending:
                client.send(b"".join(pending))
                pending.clear()
            if kind == "S:":
                line = client.line()
                assert line is not None, f"{where}: connection closed"
                assert line.endswith(b"\r\n"), f"{where}: {line!r} lacks CRLF"
                got = line[:-2].decode("utf-8", "replace")
                assert re.match(text, got), f"{where}: got {got!r}"
            else:
                _check(kind, text, client, server, tmp_path, where)
        if pending:
            client.send(b"".join(pending))
    finally:
        client.close()
    server.wait_session()
    server.close()
    if script.message is not None:
        files = server.maildir_files(tmp_path)
        assert len(files) == 1, f"expected one stored message, found {len(files)}"
        stored = _TRACE.sub(b"", files[0].read_bytes())
        assert stored == unescape("\n".join(script.message) + "\n")


def _check(kind: str, text: str, client: Client, server: Server,
           tmp_path: pathlib.Path, where: str) -> None:
    word, _, arg = text.partition(" ")
    if word == "CLOSED":
        rest = client.line()
        assert rest is None, f"{where}: expected EOF, got {rest!r}"
    elif word == "MAILDIR":
        count = len(server.maildir_files(tmp_path))
        assert count == int(arg), f"{where}: {count} messages in maildir"
    elif word == "SUMMARY":
        summary = server.wait_session()
        for pair in arg.split():
            key, _, value = pair.partition("=")
            assert str(getattr(summary, key)) == value, f"{where}: {summary}"
    else:
        raise AssertionError(f"{where}: unknown check")
