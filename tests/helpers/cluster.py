"""A qsmtp cluster on one machine: three `qsmtp serve` hosts (each its own
loopback address, runtime dir, registry), the shipped HAProxy config in
front (mode tcp, send-proxy-v2, option smtpchk) and a private Postfix behind
them as the hand-off target ([queue] backend = "smtp").

    def test_x(cluster):                       # tests/cluster/conftest.py
        c = cluster()                          # or cluster(extra_toml=..., **server_keys)
        result = send_load(c.frontend, c.postfix, clients=4, per_client=25)
        c.lb.status()                          # {"mx1": "UP", ...}
        c.kill(0); c.restart(0)                # kill -9 of mx1's supervisor, start again

Clients come from their own loopback addresses (127.0.0.101...), which the
hosts see through the PROXY header; HAProxy connects from BALANCER, the one
address the hosts trust.
"""

from __future__ import annotations

import email
import re
import smtplib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.haproxy import PrivateHAProxy, render
from helpers.postfix import PrivatePostfix
from helpers.server import Server, ServerPool, free_port

HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
BALANCER = "127.0.0.10"
FRONTEND_HOST = "127.0.0.1"
CLIENTS = "127.0.0.{}"   # client n sends from 127.0.0.(101 + n)
HOST_TOML = Path(__file__).resolve().parents[2] / "etc" / "scale-out" / "qsmtp-host.toml"



def host_toml(postfix_port: int) -> str:
    """The shipped etc/scale-out/qsmtp-host.toml with private addresses."""
    return render(HOST_TOML.read_text(), {
        '"10.0.0.10/32"': f'"{BALANCER}/32"',
        '"10.0.0.20:25"': f'"127.0.0.1:{postfix_port}"'})


class Cluster:
    def __init__(self, pool: ServerPool, base: Path, postfix: PrivatePostfix, *,
                 extra_toml: str = "", **server_keys):
        self.pool, self.postfix = pool, postfix
        keys = {"children": 6, "idle_children": 3, "grace": 10, **server_keys}
        self.hosts: list[Server] = []
        self.addresses: list[tuple[str, int]] = []
        for index, ip in enumerate(HOSTS, 1):
            port = free_port(ip)
            toml = host_toml(postfix.port) + extra_toml
            self.hosts.append(pool.make(name=f"mx{index}", start=False, base=base,
                                        me=f"mx{index}.cluster.test",
                                        listen=[f"{ip}:{port}"], extra_toml=toml, **keys))
            self.addresses.append((ip, port))
        self.names = [f"mx{i}" for i in range(1, len(HOSTS) + 1)]
        self.frontend = (FRONTEND_HOST, free_port(FRONTEND_HOST))
        self.lb = PrivateHAProxy(base, frontend=self.frontend, source=BALANCER,
                                 servers=dict(zip(self.names, self.addresses, strict=True)))

    def start(self) -> Cluster:
        for host in self.hosts:
            host.start(wait=False)
        for host in self.hosts:
            host.wait_running(20)
        self.lb.start()
        for name in self.names:
            self.lb.wait_status(name, "UP", timeout=15)
        return self

    def kill(self, index: int) -> None:
        """kill -9 of one host's supervisor (its workers get the parent-death TERM)."""
        proc = self.hosts[index].proc
        proc.kill()
        proc.wait(5)

    def restart(self, index: int) -> None:
        self.hosts[index].start(wait=True, timeout=20)

    def forwarded(self) -> dict[str, int]:
        """Client sessions HAProxy sent to each host so far (checks not counted)."""
        return {name: int(row["stot"] or 0) for name, row in self.lb.stat().items()}

    def stop(self) -> None:
        self.lb.cleanup()


# ---- load -----------------------------------------------------------------------
def make_message(client: int, number: int) -> bytes:
    """A unique message with the bytes that tempt a relay to change them:
    a leading dot, trailing spaces, a long line, an empty line, 8-bit text."""
    mid = f"<c{client}.m{number}@cluster.test>"
    lines = [f"From: <c{client}@client.test>", "To: <user@example.test>",
             f"Subject: load {client}/{number}", f"Message-ID: {mid}", "",
             f"message {number} from client {client}", ".leading dot", "trailing  ",
             "x" * 900, "", "na\u00efve caf\u00e9 \u2603", "end"]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Outcome:
    message: bytes
    attempts: int = 0
    accepted: bool = False
    failures: list[str] = field(default_factory=list)  # what each failed try got


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    elapsed: float

    @property
    def accepted(self) -> int:
        return sum(o.accepted for o in self.outcomes)

    @property
    def retried(self) -> int:
        return sum(o.attempts > 1 for o in self.outcomes)

    @property
    def failed_tries(self) -> int:
        return sum(len(o.failures) for o in self.outcomes)


def _send_one(frontend, source: str, outcome: Outcome, max_attempts: int) -> None:
    while outcome.attempts < max_attempts and not outcome.accepted:
        outcome.attempts += 1
        try:
            smtp = smtplib.SMTP(*frontend, source_address=(source, 0), timeout=30)
        except OSError as exc:
            outcome.failures.append(f"{type(exc).__name__}: {str(exc)[:80]}")
            time.sleep(0.2)
            continue
        try:
            smtp.ehlo("client.test")
            smtp.sendmail("sender@client.test", ["user@example.test"], outcome.message)
            outcome.accepted = True
        except (smtplib.SMTPException, OSError) as exc:
            outcome.failures.append(f"{type(exc).__name__}: {str(exc)[:80]}")
            time.sleep(0.2)
        finally:
            _quit(smtp)  # after the 250 a 421 to QUIT (host stopping) is fine


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class OpenTransaction:
    """A client stopped in the middle of DATA, half of its message sent: a
    transaction in flight on whichever host HAProxy picked (`peer` is its
    address, as that host's registry shows it)."""

    def __init__(self, frontend, client: int, number: int):
        self.frontend, self.peer = frontend, CLIENTS.format(101 + client)
        self.outcome = Outcome(make_message(client, number), attempts=1)
        self.smtp = smtplib.SMTP(*frontend, source_address=(self.peer, 0), timeout=30)
        self.smtp.ehlo("client.test")
        self.smtp.mail("sender@client.test")
        self.smtp.rcpt("user@example.test")
        code, _ = self.smtp.docmd("DATA")
        assert code == 354, code
        data = re.sub(rb"(?m)^\.", b"..", self.outcome.message)
        self.rest = data[len(data) // 2:] + b".\r\n"
        self.smtp.send(data[:len(data) // 2])

    def finish(self, max_attempts: int = 6) -> Outcome:
        """Send the rest; anything but 250 -> sent again from the start."""
        try:
            self.smtp.send(self.rest)
            code, text = self.smtp.getreply()
            if code == 250:
                self.outcome.accepted = True
            else:
                self.outcome.failures.append(f"{code} {text[:60]!r}")
        except (smtplib.SMTPException, OSError) as exc:
            self.outcome.failures.append(f"{type(exc).__name__}: {str(exc)[:80]}")
        finally:
            _quit(self.smtp)
        _send_one(self.frontend, self.peer, self.outcome, max_attempts)
        return self.outcome


def send_load(frontend, *, clients: int, per_client: int, max_attempts: int = 6,
              progress: threading.Semaphore | None = None) -> LoadResult:
    """`clients` threads, each sending `per_client` messages one connection
    each; a message that gets anything but 250 (4xx, reset, timeout) is sent
    again, as an MTA would.  `progress` is released once per accepted message."""
    outcomes = [[Outcome(make_message(c, n)) for n in range(per_client)]
                for c in range(clients)]

    def run(client: int) -> None:
        source = CLIENTS.format(101 + client)
        for outcome in outcomes[client]:
            _send_one(frontend, source, outcome, max_attempts)
            if progress is not None and outcome.accepted:
                progress.release()

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return LoadResult([o for per in outcomes for o in per], time.monotonic() - started)


@dataclass
class Delivery:
    missing: list[str]        # Message-IDs never delivered
    altered: list[str]        # delivered, but the bytes differ
    duplicates: int           # deliveries beyond one per message
    received_by: dict[str, int]  # qsmtp host (its Received: line) -> messages


def check_delivery(postfix: PrivatePostfix, result: LoadResult,
                   timeout: float = 60.0) -> Delivery:
    """Every sent message in Postfix's Maildir, byte-exact (LF line ends on
    disk) below the headers qsmtp and Postfix put above it."""
    sent = {email.message_from_bytes(o.message)["Message-ID"]: o.message
            for o in result.outcomes}
    files = postfix.wait_for_messages(len(sent), timeout)
    by_id: dict[str, list[bytes]] = {}
    for data in files:
        mid = email.message_from_bytes(data)["Message-ID"]
        by_id.setdefault(mid, []).append(data)
    missing = [m for m in sent if m not in by_id]
    altered = [m for m, raw in sent.items() if m in by_id and not all(
        d.endswith(raw.replace(b"\r\n", b"\n")) for d in by_id[m])]
    hosts = {name: sum(f"by {name}.cluster.test".encode() in d for d in files)
             for name in (f"mx{i}" for i in range(1, len(HOSTS) + 1))}
    return Delivery(missing, altered, len(files) - len(by_id), hosts)
