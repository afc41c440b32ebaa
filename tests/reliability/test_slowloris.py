"""Slowloris against the prefork fleet.

One address, many slow connections: the per-IP limit (max_from_ip) caps what
it holds, the rest get 421 at once; the ones admitted are cut by the
whole-line deadline (`timeout` counts from the start of a command line, so
dripping one byte at a time does not extend it); a well-behaved client from
another address is served within 1 s throughout.

Many addresses (>= children of them): every worker is held until `timeout`
and a good client waits for the first one to free up: the prefork
trade-off, measured here and documented in docs/RELIABILITY.md."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading
import time

from reltools import TALLY, scale

TIMEOUT = 3       # server.timeout for these fleets
DRIP = 1.0        # seconds between the attacker's bytes (< TIMEOUT: a naive timer never fires)


class Attacker(threading.Thread):
    """`count` connections from `sources` (round robin), one byte each per DRIP."""

    def __init__(self, port: int, sources: list[str], count: int, duration: float):
        super().__init__(daemon=True)
        self.port, self.sources, self.count, self.duration = port, sources, count, duration
        self.refused = self.timed_out = self.other = 0
        self.cut_after: list[float] = []

    def run(self) -> None:
        live = []
        for i in range(self.count):
            sock = socket.socket()
            sock.settimeout(10)
            sock.bind((self.sources[i % len(self.sources)], 0))
            try:
                sock.connect(("127.0.0.1", self.port))
            except OSError:
                self.other += 1
                continue
            sock.setblocking(False)
            live.append([sock, time.monotonic(), b""])
        end = time.monotonic() + self.duration
        while live and time.monotonic() < end:
            for entry in list(live):
                if self.step(entry):
                    live.remove(entry)
                    entry[0].close()
            time.sleep(DRIP)
        for sock, _, _ in live:
            sock.close()

    def step(self, entry) -> bool:
        """Read what came; drip one byte. True when the server ended it."""
        sock, started, seen = entry
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                seen += data
                entry[2] = seen
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        if b"421 4.7.0" in seen:
            self.refused += 1
            return True
        if b"421 4.4.2" in seen:
            self.timed_out += 1
            self.cut_after.append(time.monotonic() - started)
            return True
        if data == b"":
            self.other += 1
            return True
        with contextlib.suppress(OSError):
            sock.send(b"X")  # never a whole line
        return False


def good_client(port: int, source: str = "127.0.0.3") -> float:
    """Seconds from connect to the 250 of a whole transaction."""
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as smtp:
        smtp.sendmail("good@outside.test", ["user@example.test"],
                      b"Subject: good\r\n\r\nserved\r\n")
    return time.monotonic() - t0


def test_slowloris_one_address_limited_others_served(fleet):
    count = scale(60, 200)
    srv = fleet(children=15, idle_children=5, max_from_ip=5, timeout=TIMEOUT)
    attack = Attacker(srv.port, ["127.0.0.2"], count, duration=TIMEOUT * 3)
    attack.start()
    waits, held = [], 0
    deadline = time.monotonic() + TIMEOUT * 2
    while time.monotonic() < deadline:
        held = max(held, sum(1 for w in srv.snapshot()["workers"]
                             if w["state"] == "busy" and w["peer"] == "127.0.0.2"))
        waits.append(good_client(srv.port))
        time.sleep(0.2)
    attack.join(TIMEOUT * 4)
    assert not attack.is_alive()
    assert max(waits) < 1.0, f"good client waited {max(waits):.2f}s"
    assert 1 <= held <= 5, f"{held} sessions from one address (max_from_ip 5)"
    assert attack.refused >= count - 5 - 2, (attack.refused, attack.timed_out, attack.other)
    assert attack.timed_out >= 1 and max(attack.cut_after) < TIMEOUT + DRIP + 1.5, (
        attack.timed_out, attack.cut_after)
    TALLY.add("slowloris.connections", count)
    TALLY.add("slowloris.refused_per_ip", attack.refused)
    TALLY.add("slowloris.timed_out", attack.timed_out)
    TALLY.note("slowloris_one_ip", {"good_client_max_s": round(max(waits), 3),
                                    "good_clients": len(waits),
                                    "cut_after_s_max": round(max(attack.cut_after), 2)})
    print(f"\nslowloris x{count} from one IP: {attack.refused} refused, {attack.timed_out} "
          f"cut after <= {max(attack.cut_after):.1f}s; good client max {max(waits):.3f}s")


def test_slowloris_many_addresses_prefork_tradeoff(fleet):
    children = 6
    srv = fleet(children=children, idle_children=children, max_from_ip=5, timeout=TIMEOUT)
    sources = [f"127.0.1.{i}" for i in range(1, children * 2 + 1)]
    attack = Attacker(srv.port, sources, scale(children * 2, 200), duration=TIMEOUT * 2)
    attack.start()
    time.sleep(0.5)  # every worker now holds an attacker
    busy = sum(1 for w in srv.snapshot()["workers"] if w["state"] == "busy")
    wait = good_client(srv.port)
    attack.join(TIMEOUT * 4)
    assert busy == children, f"{busy} busy of {children}"
    # no free worker: the good client waits for a timeout, but is served
    assert wait < TIMEOUT * 2 + 2, f"good client waited {wait:.1f}s"
    TALLY.note("slowloris_all_workers_held", {"children": children, "timeout_s": TIMEOUT,
                                              "good_client_wait_s": round(wait, 2)})
    print(f"\nall {children} workers held by slow clients: good client served after {wait:.2f}s "
          f"(timeout {TIMEOUT}s)")
