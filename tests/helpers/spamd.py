"""A private SpamAssassin daemon (Debian's `spamd`) for tests.

    with Spamd() as sd:                  # started, answering PING
        sd.port, sd.socket_path          # TCP on 127.0.0.1, and a unix socket
    # stopped by PID (TERM, then KILL), its children checked gone, dir removed

It never touches the system's spamd or its files: its own directory under
/tmp (made world-readable because spamd, started as root, serves from
children running as `nobody`), `-x` (no user configs), `-L` (local tests
only: no DNS, no network rules), `--allowed-ips=127.0.0.1`.  The rules are
the stock ones the Debian package ships in /usr/share/spamassassin (never an
sa-update download), and the plugin loaders (*.pre) are copied from the
package's /etc/spamassassin; local.cf turns Bayes and auto-learning off so
every scan is the same.  Whatever system spamd the package may have started
is irrelevant: this one has its own port, socket, config and home.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from helpers.daemon import PrivateDaemon, ask
from helpers.server import alive, children_of, free_port, wait_for

SPAMD = "/usr/sbin/spamd"
RULES = "/usr/share/spamassassin"
PRE_FILES = "/etc/spamassassin/*.pre"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
LOCAL_CF = """\
required_score 5.0
use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
dns_available no
"""


class Spamd(PrivateDaemon):
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qsmtp-spamd-"))
        self.port = free_port()
        self.socket_path = str(self.dir / "spamd.sock")
        self.log_path = self.dir / "spamd.log"
        self.pid_path = self.dir / "spamd.pid"
        self.proc: subprocess.Popen | None = None
        self.pids: set[int] = set()
        self.startup_seconds = 0.0

    def _prepare(self) -> list[str]:
        site, home = self.dir / "site", self.dir / "home"
        site.mkdir()
        home.mkdir()
        pre = glob.glob(PRE_FILES)
        if not pre:
            raise AssertionError(f"no {PRE_FILES}: is the spamassassin package installed?")
        for path in pre:
            shutil.copy(path, site)
        (site / "local.cf").write_text(LOCAL_CF)
        os.chmod(self.dir, 0o755)
        os.chmod(home, 0o777)
        args = [SPAMD, "-x", "-L", "-C", RULES, f"--siteconfigpath={site}", "-H", str(home),
                f"--listen=127.0.0.1:{self.port}", f"--listen={self.socket_path}",
                "--socketmode=0666", "--allowed-ips=127.0.0.1", "-r", str(self.pid_path),
                "--max-children=3", "--min-children=1", "--min-spare=1", "--max-spare=2",
                "--syslog=stderr"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        return args

    def start(self, timeout: float = 60.0) -> Spamd:
        args = self._prepare()
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir)
        self.pids.add(self.proc.pid)
        wait_for(self._answers, timeout, interval=0.05, what=f"spamd PONG\n{self.log()}")
        self.startup_seconds = time.monotonic() - started
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"spamd exited {self.proc.returncode}:\n{self.log()}")
        self.pids.update(children_of(self.proc.pid))
        return b"PONG" in ask(("127.0.0.1", self.port), socket.AF_INET, b"PING SPAMC/1.5\r\n\r\n")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.pids.update(children_of(self.proc.pid))
        self.terminate()
        for pid in self.pids - {self.proc.pid}:  # children spamd forked
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in self.pids), 10, what="spamd children gone")
        self.proc = None
