"""The load cases, each one Postfix smtp-source command line: (a)-(e) of
issue 6 (plain delivery), (f) of issue 15 (the plugin stack: a non-relay
client, a DKIM-signed message from bench/stack.py sent with -F)."""
import subprocess
import time
from dataclasses import dataclass, replace

import stack

SOURCE = "/usr/sbin/smtp-source"
ENVELOPE = ["-f", "sender@example.com", "-t", "rcpt@example.com",
            "-M", "client.example.com"]   # -M: smtp-source never asks DNS
# (f): the sender's domain has SPF and DKIM records in bench/stack.py's DNS.
STACK_ENVELOPE = ["-f", stack.SENDER, "-t", stack.RCPT, "-M", stack.HELO]


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    sessions: int
    messages: int
    length: int
    reuse: bool = False
    stack: bool = False             # (f): the stack servers, the signed message
    timeout: float = 180.0          # bound: smtp-source is killed after this

    def argv(self, port, message=None):
        """message: the file -F sends (case f); else smtp-source's own."""
        a = [SOURCE, "-s", str(self.sessions), "-m", str(self.messages)]
        a += ["-F", str(message)] if self.stack and message else ["-l", str(self.length)]
        if self.reuse:
            a.append("-d")
        return a + (STACK_ENVELOPE if self.stack else ENVELOPE) + [f"127.0.0.1:{port}"]

    def scaled(self, factor):
        """Fewer messages (--scale, busy rounds); never fewer than the
        session count."""
        return replace(self, messages=max(self.sessions, int(self.messages * factor)))

    def with_messages(self, n):
        return replace(self, messages=max(self.sessions, n))


CASES = [
    Case("a", "20 sessions, 1 msg/connection, 5 KB", 20, 2000, 5000),
    Case("b", "1 session, 1 msg/connection, 5 KB", 1, 500, 5000),
    Case("c", "20 sessions, connection reused, 5 KB", 20, 2000, 5000, reuse=True),
    Case("d", "200 connections at once, 5 KB", 200, 200, 5000),
    Case("e", "10 sessions, 1 MB messages", 10, 200, 1048576),
    # (f): qpsmtpd-prefork's stack managed ~10-30 msg/s on this 2-core VM:
    # 600 messages and a longer bound keep it well inside smtp-source's timeout.
    Case("f", "plugin stack, 20 sessions, 1 msg/connection, signed 5 KB", 20, 600, 5000,
         stack=True, timeout=300.0),
]
BY_KEY = {c.key: c for c in CASES}


def run_source(case, port, message=None):
    """Run smtp-source; (elapsed seconds, exit code, stderr tail)."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(case.argv(port, message), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=case.timeout)
        rc, err = p.returncode, p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        rc, err = -1, "timeout after {:.0f}s; {}".format(
            case.timeout, (exc.stderr or b"").decode(errors="replace"))
    return time.monotonic() - t0, rc, err.strip()[-300:]
