"""The five load cases of issue 6, each one Postfix smtp-source command line."""
import subprocess
import time
from dataclasses import dataclass

SOURCE = "/usr/sbin/smtp-source"
ENVELOPE = ["-f", "sender@example.com", "-t", "rcpt@example.com",
            "-M", "client.example.com"]   # -M: smtp-source never asks DNS


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    sessions: int
    messages: int
    length: int
    reuse: bool = False
    timeout: float = 180.0          # bound: smtp-source is killed after this

    def argv(self, port):
        a = [SOURCE, "-s", str(self.sessions), "-m", str(self.messages),
             "-l", str(self.length)]
        if self.reuse:
            a.append("-d")
        return a + ENVELOPE + ["127.0.0.1:%d" % port]

    def scaled(self, factor):
        """Fewer messages (--quick); never fewer than the session count."""
        return Case(self.key, self.title, self.sessions,
                    max(self.sessions, int(self.messages * factor)),
                    self.length, self.reuse, self.timeout)


CASES = [
    Case("a", "20 sessions, 1 msg/connection, 5 KB", 20, 2000, 5000),
    Case("b", "1 session, 1 msg/connection, 5 KB", 1, 500, 5000),
    Case("c", "20 sessions, connection reused, 5 KB", 20, 2000, 5000, reuse=True),
    Case("d", "200 connections at once, 5 KB", 200, 200, 5000),
    Case("e", "10 sessions, 1 MB messages", 10, 200, 1048576),
]
BY_KEY = {c.key: c for c in CASES}


def run_source(case, port):
    """Run smtp-source; (elapsed seconds, exit code, stderr tail)."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(case.argv(port), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=case.timeout)
        rc, err = p.returncode, p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        rc, err = -1, "timeout after %.0fs; %s" % (
            case.timeout, (exc.stderr or b"").decode(errors="replace"))
    return time.monotonic() - t0, rc, err.strip()[-300:]
