"""What the private scanner daemons the tests start (spamd, clamd) share:
a directory of their own, a process stopped by PID, a log to show on failure,
and a one-shot request to see whether they answer."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path


class PrivateDaemon:
    dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> PrivateDaemon:
        raise NotImplementedError

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self) -> None:
        """TERM (after CONT, in case a test paused it), then KILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        self.terminate()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def ask(address, family: int, request: bytes) -> bytes:
    """One request, the first answer; b"" when the daemon does not answer."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(request)
            return sock.recv(200)
    except OSError:
        return b""
