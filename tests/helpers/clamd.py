"""A private ClamAV daemon (Debian's `clamd`) with a signature database the
test writes: no freshclam, no download, no system clamd.

    with Clamd({"Qsmtp.Test.EICAR": EICAR}) as cd:   # started, answering PING
        cd.port, cd.socket_path           # TCP on 127.0.0.1, and a unix socket
    # stopped by PID (TERM, then KILL), directory removed

Each signature is one line of an .ndb file (`name:0:*:hex`: the bytes
anywhere in any file clamd scans, including decoded mail attachments); clamd
reports custom signatures as `<name>.UNOFFICIAL`.  clamd.conf is written
from scratch (Foreground, its own sockets, pid file, log, temp dir and
DatabaseDirectory), so the package's /etc/clamav and whatever clamd or
freshclam the package may have started play no part.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from helpers.daemon import PrivateDaemon, ask
from helpers.server import free_port, wait_for

CLAMD = "/usr/sbin/clamd"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


class Clamd(PrivateDaemon):
    def __init__(self, signatures: dict[str, bytes], stream_max: str = "25M") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qsmtp-clamd-"))
        self.port = free_port()
        self.socket_path = str(self.dir / "clamd.sock")
        self.log_path = self.dir / "clamd.log"
        self.conf_path = self.dir / "clamd.conf"
        self.signatures = signatures
        self.stream_max = stream_max
        self.proc: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    def _prepare(self) -> None:
        db = self.dir / "db"
        db.mkdir()
        lines = [f"{name}:0:*:{data.hex()}" for name, data in self.signatures.items()]
        (db / "qsmtp-test.ndb").write_text("\n".join(lines) + "\n")
        (self.dir / "tmp").mkdir()
        self.conf_path.write_text(f"""\
Foreground yes
LocalSocket {self.socket_path}
TCPSocket {self.port}
TCPAddr 127.0.0.1
DatabaseDirectory {db}
PidFile {self.dir / 'clamd.pid'}
TemporaryDirectory {self.dir / 'tmp'}
LogFile {self.log_path}
LogTime yes
StreamMaxLength {self.stream_max}
MaxThreads 4
SelfCheck 3600
""")

    def start(self, timeout: float = 30.0) -> Clamd:
        self._prepare()
        started = time.monotonic()
        self.proc = subprocess.Popen([CLAMD, f"--config-file={self.conf_path}"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.dir)
        wait_for(self._answers, timeout, interval=0.05, what=f"clamd PONG\n{self.log()}")
        self.startup_seconds = time.monotonic() - started
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"clamd exited {self.proc.returncode}:\n{self.log()}")
        return ask(self.socket_path, socket.AF_UNIX, b"zPING\0") == b"PONG\0"

    def pause(self) -> None:
        """SIGSTOP: clamd still accepts connections (the kernel does) but
        never answers -- a hung scanner."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
