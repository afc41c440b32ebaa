"""Load: many concurrent clients, mixed sizes 1 KB - 5 MB, through a fleet of
15: every 250 is exactly one stored message with identical bytes (SHA-256
after undoing the maildir storage transform), every other outcome is a 4xx the
client saw; no worker or fd leak, registry == process table, supervisor RSS
flat.  Short: 20 clients x 20 s; soak: 50 clients x 10 min."""

from __future__ import annotations

import contextlib
import json
import os
import random
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter

from helpers.server import alive, children_of, wait_for
from reltools import (
    TALLY,
    expected_stored,
    fd_count,
    maildir_files,
    make_message,
    ppid_of,
    rss_kb,
    scale,
    sha,
    strip_added,
)

KB, MB = 1024, 1024 * 1024
# (weight, low, high): mostly small mail, a tail of big ones up to 5 MB
SIZES = [(50, 1 * KB, 4 * KB), (30, 10 * KB, 100 * KB), (15, 200 * KB, 1 * MB),
         (5, 4 * MB, 5 * MB)]
QSMTPCTL = os.path.join(os.path.dirname(sys.executable), "qsmtpctl")


def pick_size(rng: random.Random) -> int:
    weights = [w for w, _, _ in SIZES]
    _, low, high = rng.choices(SIZES, weights)[0]
    return rng.randint(low, high)


class Outcomes:
    def __init__(self):
        self.lock = threading.Lock()
        self.accepted: dict[str, tuple[str, int]] = {}  # maildir name -> (sha, size)
        self.soft: list[str] = []       # 4xx the client saw
        self.errors: list[str] = []     # anything else: a failure
        self.sessions = 0
        self.bytes_sent = 0


def client(port: int, deadline: float, seed: int, filler: bytes, out: Outcomes) -> None:
    rng = random.Random(seed)
    n = 0
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
                smtp.ehlo(f"client{seed}.test")
                for _ in range(rng.choice((1, 1, 2, 3))):  # several transactions too
                    n += 1
                    one_transaction(smtp, f"c{seed}n{n}", pick_size(rng), filler, out)
                smtp.quit()
            with out.lock:
                out.sessions += 1
        except smtplib.SMTPResponseException as exc:
            with out.lock:
                (out.soft if 400 <= exc.smtp_code < 500 else out.errors).append(
                    f"{exc.smtp_code} {exc.smtp_error!r}")
        except (OSError, smtplib.SMTPException) as exc:
            with out.lock:
                out.errors.append(f"{type(exc).__name__}: {exc}")


def one_transaction(smtp, ident: str, size: int, filler: bytes, out: Outcomes) -> None:
    message = make_message(ident, size, filler)
    smtp.mail("load@outside.test", [f"size={len(message)}"])
    smtp.rcpt("user@example.test")
    code, text = smtp.data(message)
    with out.lock:
        out.bytes_sent += len(message)
        if code == 250:
            name = text.decode().rsplit(" ", 1)[-1]
            assert name not in out.accepted, f"two 250s named {name}"
            out.accepted[name] = (sha(expected_stored(message)), len(message))
        elif 400 <= code < 500:
            out.soft.append(f"{code} {text!r}")
        else:
            out.errors.append(f"DATA {code} {text!r}")


def sample_rss(pid: int, stop: threading.Event, samples: list[int]) -> None:
    while not stop.wait(0.5):
        try:
            samples.append(rss_kb(pid))
        except OSError:
            return


def test_load_mixed_sizes_nothing_lost(fleet):
    clients, seconds = scale((20, 20), (50, 600))
    srv = fleet(children=15, idle_children=5, max_from_ip=0, child_lifetime=1000,
                timeout=120, databytes=6 * MB)
    sup = srv.pid
    wait_for(lambda: len(srv.workers()) == 5, 5, what="5 idle workers")
    base_sup_fds = fd_count(sup)
    template = fd_targets(srv.workers()[0])  # what a fresh worker holds
    rss, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(sup, stop, rss), daemon=True)
    sampler.start()
    filler = os.urandom(48 * KB).hex().encode()
    out = Outcomes()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(srv.port, deadline, i, filler, out))
               for i in range(clients)]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 300)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "a client never finished"
    stop.set()
    sampler.join(2)
    assert out.errors == [], f"{len(out.errors)} non-4xx outcomes: {out.errors[:5]}"
    assert out.accepted, "nothing was accepted"
    compared = check_maildir(srv.maildir, out)
    wait_for(lambda: not [w for w in srv.snapshot()["workers"] if w["state"] == "busy"],
             10, what="all workers idle")
    check_registry_vs_proc(srv)
    assert fd_count(sup) == base_sup_fds, "supervisor fd count changed"
    # a worker may keep new/ and its own /proc/PID/fd open (queue/maildir
    # caches those two fds: it links unnamed files through the latter);
    # nothing else may be left over: no client sockets, no spool files
    for pid in srv.workers():
        cached = Counter({str(srv.maildir / "new"): 1, f"/proc/{pid}/fd": 1})
        extra = fd_targets(pid) - template
        assert not extra - cached, f"worker {pid} holds more fds than at start: {extra}"
    warm = rss[len(rss) // 10:] or rss
    growth = max(warm) - min(warm)
    assert growth < 4096, f"supervisor RSS grew {growth} kB: {warm[:3]}..{warm[-3:]}"
    TALLY.add("load.sessions", out.sessions)
    TALLY.add("load.messages_accepted", len(out.accepted))
    TALLY.add("load.soft_4xx", len(out.soft))
    TALLY.add("load.bytes_sent", out.bytes_sent)
    TALLY.add("bytes_compared", compared)
    TALLY.add("messages_compared", len(out.accepted))
    TALLY.note("load", {"clients": clients, "seconds": round(elapsed, 1),
                        "msgs_per_s": round(len(out.accepted) / elapsed, 1),
                        "MB_per_s": round(out.bytes_sent / elapsed / MB, 2),
                        "supervisor_rss_kb": [min(warm), max(warm)],
                        "supervisor_fds": base_sup_fds})
    print(f"\nload: {clients} clients x {elapsed:.0f}s: {out.sessions} sessions, "
          f"{len(out.accepted)} accepted, {len(out.soft)} 4xx, "
          f"{out.bytes_sent / MB:.0f} MB sent, RSS {min(warm)}..{max(warm)} kB")


def fd_targets(pid: int) -> Counter:
    """What each open fd of `pid` points to (sockets/pipes by inode)."""
    targets = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets[os.readlink(f"/proc/{pid}/fd/{fd}")] += 1
    return targets


def check_maildir(maildir, out: Outcomes) -> int:
    """new/ holds exactly the accepted names, each with identical bytes."""
    files = maildir_files(maildir)
    assert files["tmp"] == [], f"left in tmp/: {files['tmp'][:5]}"
    assert set(files["new"]) == set(out.accepted), (
        f"missing {sorted(set(out.accepted) - set(files['new']))[:5]} "
        f"extra {sorted(set(files['new']) - set(out.accepted))[:5]}")
    compared = 0
    for name, (digest, _size) in out.accepted.items():
        stored = (maildir / "new" / name).read_bytes()
        body, added = strip_added(stored)
        assert added["return_path"] == b"Return-Path: <load@outside.test>"
        assert added["delivered_to"] == [b"Delivered-To: <user@example.test>"]
        assert sha(body) == digest, f"{name}: stored bytes differ"
        compared += len(body)
    return compared


def check_registry_vs_proc(srv) -> None:
    """qsmtpctl status --json (the registry) against /proc."""
    result = subprocess.run([QSMTPCTL, "status", "--json", "--config", str(srv.config_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["supervisor"]["pid"] == srv.pid
    listed = sorted(w["pid"] for w in status["workers"])
    actual = sorted(children_of(srv.pid))
    assert listed == actual, f"registry {listed} != process table {actual}"
    assert all(ppid_of(pid) == srv.pid for pid in listed)
    assert len(listed) <= status["pool"]["max"] == 15
    assert status["pool"]["busy"] == 0 and status["peers"] in ({}, [], None)
    gone = [p for p in srv.seen_pids if p != srv.pid and p not in listed and alive(p)]
    assert gone == [], f"workers alive but not in the registry: {gone}"
