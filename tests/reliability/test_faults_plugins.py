"""Misbehaving plugins on a live fleet (tests/reliability/reliability_plugins.py,
loaded by dotted path): a hook that hangs trips its time budget -> 451 4.3.0;
one that raises -> 451 4.3.0; either way the worker retires after that
session and sessions beside it are untouched.  A hook that swallows the
timeout is SIGKILLed by the heartbeat check.  A leaking plugin is bounded by
child_lifetime recycling."""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time

from helpers.server import alive, wait_for
from reltools import TALLY, Raw, code, maildir_files, rss_kb, scale

PLUGINS = """
[[plugins]]
name = "reliability_plugins:Hang"
[[plugins]]
name = "reliability_plugins:Raise"
[[plugins]]
name = "reliability_plugins:Leak"
mb = 8
"""
ALLOW = ("Traceback", "plugin", "reliability:", "raise RuntimeError", " died (")


def start(fleet, **keys):
    settings = dict(children=6, idle_children=3, max_from_ip=0, hook_timeout=1, timeout=2)
    settings.update(keys)
    return fleet(extra_toml=PLUGINS, allow_log=ALLOW, **settings)


class Bystander(threading.Thread):
    """A well-behaved client sending messages the whole time."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.stop, self.ok, self.failed = port, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
                    smtp.sendmail("a@outside.test", ["user@example.test"],
                                  b"Subject: bystander\r\n\r\nhello\r\n")
                self.ok += 1
            except (OSError, smtplib.SMTPException) as exc:
                self.failed.append(repr(exc))
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        self.join(15)
        assert self.failed == [] and self.ok > 0, (self.ok, self.failed[:3])


FAULTY = "127.0.0.4"  # the faulty sessions' address: its worker is easy to find


def open_rcpt(srv, local: str) -> tuple[Raw, int, bytes, float]:
    """A session from FAULTY up to RCPT <local@...>: (client, worker pid, reply, secs)."""
    client = Raw(srv.port, timeout=15, source=FAULTY)
    assert code(client.reply()) == 220
    assert code(client.cmd("EHLO fault.test")) == 250
    assert code(client.cmd("MAIL FROM:<a@outside.test>")) == 250
    (pid,) = [w["pid"] for w in srv.snapshot()["workers"] if w["peer"] == FAULTY]
    t0 = time.monotonic()
    reply = client.cmd(f"RCPT TO:<{local}@example.test>")
    return client, pid, reply, time.monotonic() - t0


def test_hanging_and_raising_hooks_451_worker_recycled(fleet):
    srv = start(fleet)
    bystander = Bystander(srv.port)
    bystander.start()
    rounds, timings = scale(3, 50), []
    for _ in range(rounds):
        for local in ("hang", "raise"):
            client, pid, reply, took = open_rcpt(srv, local)
            assert reply.startswith(b"451 4.3.0"), reply
            timings.append(took) if local == "hang" else None
            assert took < 3, f"{local}: {took:.1f}s"
            # the session goes on: a normal recipient and a message still work
            assert code(client.cmd("RCPT TO:<user@example.test>")) == 250
            assert code(client.cmd("DATA")) == 354
            assert code(client.cmd(b"Subject: after fault\r\n\r\nok\r\n.\r\n")) == 250
            client.cmd("QUIT")
            client.close()
            TALLY.add(f"faults.plugin_{local}")
            # that worker retires after its session (plugin_failed)
            wait_for(lambda: not alive(pid) and pid not in
                     {w["pid"] for w in srv.snapshot()["workers"]}, 3,
                     what="the worker that saw the failure retired")
    bystander.finish()
    TALLY.note("plugin_hang_451_after_s", round(max(timings), 2))
    print(f"\nhang -> 451 after {min(timings):.2f}..{max(timings):.2f}s; "
          f"bystander sent {bystander.ok} messages meanwhile")


def test_raise_at_data_post_nothing_stored(fleet):
    srv = start(fleet)
    for _ in range(scale(3, 50)):
        with Raw(srv.port) as client:
            client.reply()
            client.cmd("EHLO fault.test")
            client.cmd("MAIL FROM:<a@outside.test>")
            client.cmd("RCPT TO:<user@example.test>")
            assert code(client.cmd("DATA")) == 354
            reply = client.cmd(b"X-Raise: yes\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
            assert reply.startswith(b"451 4.3.0"), reply
            client.cmd("QUIT")
        TALLY.add("faults.plugin_raise_data_post")
    assert maildir_files(srv.maildir) == {"tmp": [], "new": []}


def test_stubborn_hook_killed_by_heartbeat(fleet):
    srv = start(fleet)
    bystander = Bystander(srv.port)
    bystander.start()
    for _ in range(scale(1, 10)):
        with Raw(srv.port, timeout=20) as client:
            client.reply()
            client.cmd("EHLO fault.test")
            client.cmd("MAIL FROM:<a@outside.test>")
            client.send(b"RCPT TO:<stubborn@example.test>\r\n")
            t0 = time.monotonic()
            try:
                reply = client.reply()
            except ConnectionResetError:
                reply = b""
            took = time.monotonic() - t0
            # 451 if the budget still got through, else a plain close
            assert reply in (b"",) or reply.startswith(b"451"), reply
            assert took < 2 * 2 + 3, f"wedged worker lived {took:.1f}s"
        TALLY.add("faults.plugin_stubborn")
        wait_for(lambda: len([w for w in srv.snapshot()["workers"]
                              if w["state"] == "idle"]) >= 3, 3, what="pool refilled")
    bystander.finish()
    assert " died (killed by SIGKILL)" in srv.log() or "silent for" in srv.log()
    print(f"\nstubborn hook: connection ended after {took:.1f}s")


def test_leaking_plugin_bounded_by_recycling(fleet):
    lifetime, sessions, leak_mb = 4, scale(30, 200), 8
    srv = start(fleet, child_lifetime=lifetime, children=4, idle_children=2)
    peak = 0
    for i in range(sessions):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as smtp:
            smtp.sendmail("a@outside.test", ["leak@example.test"],
                          f"Subject: leak {i}\r\n\r\nx\r\n".encode())
        for pid in srv.workers():
            with contextlib.suppress(OSError):
                peak = max(peak, rss_kb(pid))
    TALLY.add("faults.plugin_leak_sessions", sessions)
    # at most round(4 * 1.25) = 5 sessions per worker -> 5 x 8 MB on ~30 MB
    bound = 30 * 1024 + (round(lifetime * 1.25) + 1) * leak_mb * 1024
    assert peak < bound, f"worker RSS reached {peak} kB (bound {bound})"
    TALLY.note("plugin_leak_peak_worker_rss_kb", peak)
    assert len(maildir_files(srv.maildir)["new"]) == sessions
