"""A real loopback server for protocol tests: `run_session` in a thread per
accepted connection, with an App built by App.load from a TOML file.

Also the transcript format (tests/protocol/transcripts/*.txt):

    # comment
    @ server.databytes = 2000     config override (TOML value), before any C:/S:
    @drop relay                   leave a section out of the config
    @plugin mod:Class           add a [[plugins]] entry (module or builtin name)
    C: EHLO x                     client line, CRLF appended
    C< raw\\r\\nbytes              client bytes as written (no CRLF appended)
    S: 250[- ]                    next reply line must match (re.match); ends in CRLF
    =CLOSED                       the server closed the connection (EOF)
    =MAILDIR 1                    messages in maildir new/
    M: line                       expected stored message (after the trace
                                  headers), LF line ends; compared at the end
    =SUMMARY result=accepted messages=1

Consecutive C:/C< lines are sent in ONE write, just before the next S:/=
line: a transcript that writes no S: between commands is pipelining.
Escapes in C:/C</M: text: \\r \\n \\t \\0 \\\\ \\xHH.
"""

from __future__ import annotations

import pathlib
import re
import socket
import threading
from dataclasses import dataclass, field

from qsmtp import config as qconfig
from qsmtp.app import App
from qsmtp.smtp.session import run_session
from qsmtp.smtp.state import ConnectionInfo

BASE = {
    "server": {"me": '"mx.example.test"', "timeout": "10", "databytes": "100000",
               "max_recipients": "5", "max_unrecognized": "3", "hook_timeout": "5"},
    "relay": {"clients": '["127.0.0.0/8"]', "domains": '["example.test", ".sub.example.test"]'},
    "queue": {"backend": '"maildir"'},
}
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt0\\])")
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def unescape(text: str) -> bytes:
    def sub(match: re.Match) -> bytes:
        code = match.group(1)
        return bytes([int(code[1:], 16)]) if code[:1] == b"x" else _SIMPLE[code]
    return _ESCAPE.sub(sub, text.encode("utf-8"))


def write_config(tmp: pathlib.Path, overrides: dict[str, str] | None = None,
                 drop: tuple[str, ...] = (), extra: str = "") -> str:
    tables = {section: dict(keys) for section, keys in BASE.items() if section not in drop}
    tables.setdefault("queue", {})["path"] = f'"{tmp / "maildir"}"'
    tables.setdefault("server", {}).setdefault("state_dir", f'"{tmp / "state"}"')
    for name, value in (overrides or {}).items():
        section, _, key = name.partition(".")
        tables.setdefault(section, {})[key] = value
    text = "".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                   for section, keys in tables.items())
    path = tmp / "qsmtp.toml"
    path.write_text(text + extra)
    return str(path)


class Server:
    """Accepts connections on 127.0.0.1:0 and runs one session each."""

    def __init__(self, config_path: str, wrap=None):
        self.app = App.load(qconfig.load(config_path))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.summaries: list = []
        self.wrap = wrap  # optional: socket -> socket (e.g. a send counter)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, addr = self.listener.accept()
            except OSError:
                return
            if self.wrap is not None:
                conn = self.wrap(conn)
            info = ConnectionInfo(addr[0], addr[1], "127.0.0.1", self.port)
            self.done.clear()
            self.summaries.append(run_session(self.app, conn, info))
            self.done.set()

    def wait_session(self, timeout: float = 10.0):
        assert self.done.wait(timeout), "session did not end"
        return self.summaries[-1]

    def close(self) -> None:
        self.listener.close()

    def maildir_files(self, tmp: pathlib.Path) -> list[pathlib.Path]:
        new = tmp / "maildir" / "new"
        return sorted(new.iterdir()) if new.exists() else []


class Client:
    """Reads replies line by line from a raw socket."""

    def __init__(self, port: int, timeout: float = 15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes | None:
        """One reply line including CRLF, or None at EOF."""
        while b"\r\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest or None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def reply(self) -> list[bytes]:
        """A whole (possibly multi-line) reply, lines without CRLF."""
        lines = []
        while True:
            line = self.line()
            assert line is not None and line.endswith(b"\r\n"), f"bad reply line {line!r}"
            lines.append(line[:-2])
            if line[3:4] != b"-":
                return lines

    def close(self) -> None:
        self.sock.close()


@dataclass
class Transcript:
    overrides: dict[str, str] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    steps: list[tuple[str, str]] = field(default_factory=list)
    message: list[str] | None = None


def parse_transcript(path: pathlib.Path) -> Transcript:
    script = Transcript()
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        if raw.startswith("@plugin "):
            script.plugins.append(raw[8:].strip())
        elif raw.startswith("@drop "):
            script.drop.append(raw[6:].strip())
        elif raw.startswith("@ "):
            name, _, value = raw[2:].partition("=")
            script.overrides[name.strip()] = value.strip()
        elif raw.startswith("M:"):
            script.message = (script.message or []) + [raw[3:] if len(raw) > 2 else ""]
        elif raw[:2] in ("C:", "C<", "S:") or raw.startswith("="):
            kind = raw[:2] if raw[:2] in ("C:", "C<", "S:") else "="
            script.steps.append((kind, raw[3:] if kind != "=" else raw[1:]))
        else:
            raise ValueError(f"{path.name}:{number}: cannot parse {raw!r}")
    return script


def plugins_toml(names: list[str]) -> str:
    return "".join(f'\n[[plugins]]\nname = "{name}"\n' for name in names)
