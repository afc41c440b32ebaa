"""Signals under load, with real smtplib clients: HUP is a rolling reload
with zero failed transactions; a broken config on HUP keeps the old
generation serving; TERM lets sessions finish (or 421s them) and loses
nothing that was acknowledged."""

from __future__ import annotations

import signal
import smtplib
import threading
import time

from helpers.server import wait_for

MESSAGE = "Subject: load\r\n\r\nhello\r\n"


class Load:
    """N threads sending one message per connection until stopped."""

    def __init__(self, port: int, threads: int = 6, tolerate=()):
        self.port, self.tolerate = port, tolerate
        self.acked = 0
        self.failures: list[str] = []
        self.tolerated = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, index: int) -> None:
        while not self.done.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=15) as client:
                    client.sendmail(f"c{index}@client.test", ["u@example.test"], MESSAGE)
                with self.lock:
                    self.acked += 1
            except self.tolerate:
                with self.lock:
                    self.tolerated += 1
                time.sleep(0.05)
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                with self.lock:
                    self.failures.append(repr(exc))


def delivered(srv) -> int:
    new = srv.maildir / "new"
    return len(list(new.iterdir())) if new.exists() else 0


def test_hup_under_load_rolls_without_failures(serve):
    srv = serve(children=10, idle_children=3, max_from_ip=0, grace=10)
    with Load(srv.port) as load:
        time.sleep(2)
        srv.signal(signal.SIGHUP)
        time.sleep(2.5)
        srv.signal(signal.SIGHUP)
        time.sleep(3)
    assert not load.failures, load.failures[:5]
    assert load.acked > 20
    snap = wait_for(lambda: (lambda s: s if all(
        w["generation"] == 3 for w in s["workers"]) else None)(srv.snapshot()), 5,
        what="only generation 3 workers")
    assert snap["supervisor"]["generation"] == 3
    assert snap["supervisor"]["reload_status"] == "ok"
    assert delivered(srv) == load.acked
    print(f"\nHUP x2 under load: {load.acked} messages, 0 failures")


def test_hup_with_broken_config_keeps_old_generation(serve):
    srv = serve(children=4, idle_children=2)
    good = srv.config_path.read_text()
    srv.config_path.write_text(good.replace("[server]\n", "[server]\nno_such_key = 1\n"))
    srv.signal(signal.SIGHUP)
    snap = wait_for(lambda: (lambda s: s if s["supervisor"]["reload_status"] == "failed"
                             else None)(srv.snapshot()), 5, what="reload failed")
    assert snap["supervisor"]["generation"] == 1
    assert "no_such_key" in snap["supervisor"]["reload_reason"]
    assert all(w["generation"] == 1 for w in snap["workers"])
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as client:
        client.sendmail("a@client.test", ["u@example.test"], MESSAGE)
    log = srv.log()
    assert "reload failed" in log and "no_such_key" in log and "Traceback" not in log
    # a fixed config reloads fine afterwards
    srv.config_path.write_text(good)
    srv.signal(signal.SIGHUP)
    wait_for(lambda: srv.snapshot()["supervisor"]["generation"] == 2, 5, what="gen 2")


def test_hup_beyond_the_registry_clamps_children(serve):
    """The registry is sized at start (2 x children slots): a reload asking
    for more workers gets a warning and the most it can hold."""
    srv = serve(children=2, idle_children=1)
    srv.config_path.write_text(srv.config_path.read_text().replace(
        "children = 2\n", "children = 5\n").replace("idle_children = 1\n",
                                                       "idle_children = 4\n"))
    srv.signal(signal.SIGHUP)
    snap = wait_for(lambda: (lambda s: s if s["supervisor"]["generation"] == 2
                             and s["supervisor"]["reload_status"] == "ok" else None)(
        srv.snapshot()), 5, what="generation 2")
    assert snap["pool"]["max"] == 2 and snap["pool"]["slots"] == 4
    wait_for(lambda: len(srv.workers()) == 2, 5, what="2 workers of generation 2")
    time.sleep(0.5)  # the pool would grow now if the clamp did not hold
    assert len(srv.workers()) == 2
    assert "server.children 5 exceeds the registry made at start" in srv.log()
    assert "Traceback" not in srv.log()


def test_term_under_load_loses_nothing_acknowledged(serve):
    srv = serve(children=8, idle_children=3, max_from_ip=0, grace=5, start=False,
                flags=["--pid-file", "qsmtp.pid"])
    srv.start()
    pid_file = srv.dir / "qsmtp.pid"
    assert pid_file.read_text().strip() == str(srv.pid)
    closed = (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError)
    with Load(srv.port, tolerate=closed + (smtplib.SMTPResponseException,)) as load:
        time.sleep(2)
        acked_before = load.acked
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.proc.wait(15) == 0
        stopped_in = time.monotonic() - t0
    assert not load.failures, load.failures[:5]
    assert acked_before > 5
    assert not (srv.runtime_dir / "registry").exists()
    assert not pid_file.exists()
    assert delivered(srv) >= load.acked  # nothing acknowledged is lost
    print(f"\nTERM under load: stopped in {stopped_in:.2f}s, {load.acked} acked, "
          f"{load.tolerated} refused/421")


def test_ttin_ttou_adjust_idle_target(serve):
    srv = serve(children=6, idle_children=2)
    wait_for(lambda: len(srv.workers()) == 2, 3)
    for target in (3, 4):  # one at a time: pending signals of a kind merge
        srv.signal(signal.SIGTTIN)
        wait_for(lambda: srv.snapshot()["pool"]["idle_children"] == target, 2)
    wait_for(lambda: len(srv.workers()) == 4, 2, what="4 workers after 2 x TTIN")
    assert srv.snapshot()["pool"]["idle_children"] == 4
    srv.signal(signal.SIGTTOU)
    wait_for(lambda: srv.snapshot()["pool"]["idle_children"] == 3, 2)
