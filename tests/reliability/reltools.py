"""Shared tools of the reliability tests: the short/soak switch, a tally of
figures for docs/RELIABILITY.md, a raw SMTP client, the reply-syntax check,
and the maildir read-back that undoes the storage transform (docs/REFERENCE.md "Storage").

Everything here talks to real `qsmtp serve` processes over loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path

SOAK = os.environ.get("QSMTP_SOAK") == "1"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REPORT = Path(os.environ.get("QSMTP_RELIABILITY_REPORT", ROOT / ".run" / "reliability.json"))
RELAY_TOML = ('\n[relay]\nclients = ["127.0.0.1/32"]\n'
              'domains = ["example.test", ".sub.example.test", "bücher.test"]\n')


def scale(short, soak):
    """The short form's figure in `make test`, the long one under `make soak`."""
    return soak if SOAK else short


# ---- the tally: figures from a real run -------------------------------------------
class Tally:
    """Counters the tests add to; written as JSON when the run ends."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.notes: dict[str, object] = {}
        self.lock = threading.Lock()

    def add(self, key: str, amount: int = 1) -> None:
        with self.lock:
            self.counts[key] += amount

    def note(self, key: str, value) -> None:
        with self.lock:
            self.notes[key] = value

    def write(self) -> None:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        data = {"soak": SOAK, "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "counts": dict(sorted(self.counts.items())), "notes": self.notes}
        REPORT.write_text(json.dumps(data, indent=2, default=str) + "\n")


TALLY = Tally()


# ---- reply syntax -----------------------------------------------------------------
REPLY_LINE = re.compile(rb"^[2-5][0-9][0-9]([ -])[\x20-\x7e\t]*$")


def check_replies(data: bytes, complete: bool = True) -> list[bytes]:
    """Every reply line: 3 digits, space or dash, printable, <= 512 octets
    with its CRLF, and ends in CRLF; a multi-line reply keeps one code.
    Returns the lines; raises AssertionError naming the bad one."""
    if not data:
        return []
    lines = data.split(b"\r\n")
    tail = lines.pop()
    assert tail == b"" or not complete, f"reply does not end in CRLF: {tail[-80:]!r}"
    previous = None
    for line in lines:
        assert len(line) + 2 <= 512, f"reply line over 512 octets: {line[:60]!r}..."
        match = REPLY_LINE.match(line)
        assert match, f"not an SMTP reply line: {line[:120]!r}"
        if previous is not None and previous[3:4] == b"-":
            assert line[:3] == previous[:3], f"code changed inside a reply: {previous!r} {line!r}"
        previous = line
    return lines


# ---- a raw client -------------------------------------------------------------------
class Raw:
    """Line-level SMTP client on a plain socket (no smtplib cleverness)."""

    def __init__(self, port: int, source: str | None = None, timeout: float = 10.0,
                 host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def reply(self) -> bytes:
        """One complete (possibly multi-line) reply; b"" on EOF."""
        while True:
            end = _reply_end(self.buf)
            if end:
                out, self.buf = self.buf[:end], self.buf[end:]
                check_replies(out)
                return out
            chunk = self.sock.recv(65536)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk

    def cmd(self, line: bytes | str) -> bytes:
        self.send(line if isinstance(line, bytes) else line.encode() + b"\r\n")
        return self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed(self) -> bool:
        """True when the server closed (EOF or reset) with nothing more to say."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reply_end(buf: bytes) -> int:
    at = 0
    while True:
        nl = buf.find(b"\r\n", at)
        if nl < 0:
            return 0
        line = buf[at:nl]
        if len(line) < 4 or line[3:4] != b"-":
            return nl + 2
        at = nl + 2


def code(reply: bytes) -> int:
    return int(reply[:3]) if reply[:3].isdigit() else 0


# ---- messages and the maildir --------------------------------------------------------
def make_message(ident: str, size: int, filler: bytes) -> bytes:
    """A CRLF message of about `size` bytes: headers naming `ident`, then
    lines cut from `filler` (some start with a dot: dot-stuffing is tested too)."""
    head = (f"Message-Id: <{ident}@load.test>\r\nFrom: <load@outside.test>\r\n"
            f"To: <user@example.test>\r\nSubject: load {ident} {size}\r\n\r\n").encode()
    lines, total, at = [head], len(head), 0
    while total < size:
        line = filler[at % len(filler):][:76]
        if len(line) < 76:
            line = filler[:76]
        if at % 997 == 0:
            line = b"." + line[1:]
        lines.append(line + b"\r\n")
        total += 78
        at += 78
    return b"".join(lines)


def expected_stored(message: bytes) -> bytes:
    """What the maildir keeps of it below the added headers (CRLF -> LF)."""
    return message.replace(b"\r\n", b"\n")


def strip_added(stored: bytes) -> tuple[bytes, dict]:
    """Undo the storage transform (docs/REFERENCE.md "Storage"): Return-Path,
    Delivered-To lines, one folded Received: header.  Returns (message part, what was stripped)."""
    lines = stored.split(b"\n")
    found = {"return_path": None, "delivered_to": [], "received": 0}
    assert lines[0].startswith(b"Return-Path: <"), lines[0][:80]
    found["return_path"] = lines.pop(0)
    while lines and lines[0].startswith(b"Delivered-To: <"):
        found["delivered_to"].append(lines.pop(0))
    assert lines and lines[0].startswith(b"Received: from "), lines[0][:80] if lines else b""
    lines.pop(0)
    found["received"] = 1
    while lines and lines[0][:1] in (b"\t", b" "):
        lines.pop(0)
    return b"\n".join(lines), found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def maildir_files(maildir: Path) -> dict[str, list[str]]:
    return {sub: sorted(os.listdir(maildir / sub)) for sub in ("tmp", "new")
            if (maildir / sub).is_dir()}


# ---- process table ---------------------------------------------------------------------
def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ppid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def log_problems(text: str) -> list[str]:
    """Lines of a server log that must never appear in these runs."""
    return [line for line in text.splitlines()
            if "Traceback" in line or " died (" in line or "crashed" in line]
