"""Where accepted mail goes, failing under a live fleet: a full or read-only
spool (real tmpfs), and an upstream MTA (queue/smtp) that is down, slow, or
closes mid-transfer.  Always 451 and nothing acknowledged; never 250
without the upstream's 250; service continues once the fault is gone.
(Unit-level versions: tests/integration/test_maildir_diskfull.py and
test_queue_upstream.py; these add the client -> fleet -> spool path.)"""

from __future__ import annotations

import os
import smtplib
import socket
import threading
import time

import pytest

from helpers.server import free_port
from helpers.tinyfs import fill, remount, tiny_tmpfs
from reltools import TALLY, maildir_files, scale


def send(port: int, subject: str, size: int = 200, timeout: float = 20) -> tuple[int, str]:
    """(DATA reply code, text); 0 with the error name if the connection broke."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as smtp:
            smtp.ehlo("storage.test")
            smtp.mail("a@outside.test")
            smtp.rcpt("user@example.test")
            status, text = smtp.data(f"Subject: {subject}\r\n\r\n{'z' * size}\r\n")
            return status, text.decode()
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")
    except (OSError, smtplib.SMTPException) as exc:
        return 0, type(exc).__name__


# ---- the spool ---------------------------------------------------------------------
@pytest.fixture
def tiny_spool(tmp_path):
    with tiny_tmpfs(tmp_path / "spool", "1m") as mnt:
        yield mnt


def test_spool_full_and_read_only_under_fleet(fleet, tiny_spool):
    maildir = tiny_spool / "Maildir"
    srv = fleet(children=4, idle_children=2, extra_toml=f'[queue]\npath = "{maildir}"\n')
    assert send(srv.port, "before")[0] == 250
    rounds = scale(3, 50)
    for i in range(rounds):
        filler = fill(tiny_spool)
        status, text = send(srv.port, f"full {i}")
        assert status == 451 and text.startswith("4.3.0"), (status, text)
        # 150 KB free, a 300 KB message: the disk fills up mid-write
        os.truncate(filler, os.path.getsize(filler) - 150_000)
        status, text = send(srv.port, f"full-mid {i}", 300_000)
        assert status == 451 and text.startswith("4.3.0"), (status, text)
        os.unlink(filler)
        assert send(srv.port, f"space back {i}")[0] == 250
        remount(tiny_spool, "ro")
        try:
            status, text = send(srv.port, f"ro {i}")
            assert status == 451 and text.startswith("4.3.0"), (status, text)
        finally:
            remount(tiny_spool, "rw")
        assert send(srv.port, f"rw again {i}")[0] == 250
        TALLY.add("faults.disk_full", 2)
        TALLY.add("faults.read_only", 1)
    files = maildir_files(maildir)
    assert files["tmp"] == [] and len(files["new"]) == 1 + 2 * rounds
    subjects = sorted((maildir / "new" / n).read_bytes().split(b"Subject: ")[1].split(b"\n")[0]
                      for n in files["new"])
    assert not any(s.startswith((b"full", b"ro ")) for s in subjects), subjects


# ---- the upstream --------------------------------------------------------------------
class Upstream:
    """A fake upstream MTA, one thread per connection; `mode` switches its
    behaviour at run time: ok, slow (answers the final dot after `delay`),
    close-mid (hangs up inside DATA), tempfail (451 after the data)."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode, self.delay = "ok", 0.0
        self.accepted: list[bytes] = []  # subjects it said 250 to
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn: socket.socket) -> None:
        mode, delay = self.mode, self.delay
        with conn:
            conn.settimeout(30)
            reader = conn.makefile("rb")
            conn.sendall(b"220 upstream.test ESMTP\r\n")
            data, in_data = b"", False
            for line in reader:
                if in_data:
                    if mode == "close-mid" and len(data) > 50:
                        return
                    if line != b".\r\n":
                        data += line
                        continue
                    in_data = False
                    if mode == "slow":
                        time.sleep(delay)
                    if mode == "tempfail":
                        conn.sendall(b"451 4.3.0 upstream busy\r\n")
                        continue
                    with self.lock:
                        self.accepted.append(data.split(b"Subject: ")[1].split(b"\r\n")[0])
                    conn.sendall(b"250 2.0.0 Ok: queued upstream\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-upstream.test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    in_data = True
                    conn.sendall(b"354 go\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.listener.close()


def test_upstream_down_slow_closing(fleet):
    upstream = Upstream()
    down_port = free_port()
    toml = ('[queue]\nbackend = "smtp"\nupstream = "127.0.0.1:{port}"\n'
            'upstream_timeout = 1\n')
    srv = fleet(children=4, idle_children=2, hook_timeout=5,
                extra_toml=toml.format(port=upstream.port))
    down = fleet(children=2, idle_children=1, hook_timeout=5,
                 extra_toml=toml.format(port=down_port))
    client_250: list[bytes] = []
    try:
        for i in range(scale(3, 50)):
            cases = [("ok", 0.0, 250), ("slow", 0.3, 250), ("slow", 2.5, 451),
                     ("close-mid", 0.0, 451), ("tempfail", 0.0, 451)]
            for mode, delay, expected in cases:
                upstream.mode, upstream.delay = mode, delay
                subject = f"{mode}-{delay}-{i}"
                status, text = send(srv.port, subject, size=5000)
                assert status == expected, (mode, delay, status, text)
                if status == 250:
                    client_250.append(subject.encode())
                TALLY.add(f"faults.upstream_{mode}")
            status, text = send(down.port, f"down-{i}")
            assert status == 451 and text.startswith("4.3.0"), (status, text)
            TALLY.add("faults.upstream_down")
    finally:
        upstream.close()
    # never a 250 to the client without the upstream's 250 for that message
    assert set(client_250) <= set(upstream.accepted), set(client_250) - set(upstream.accepted)
    assert all(s.startswith((b"ok", b"slow-0.3")) for s in client_250)
