"""A private HAProxy for the cluster tests: the shipped etc/scale-out/haproxy.cfg
with its addresses and runtime paths swapped for private ones, run in the
foreground (-db) as our child, stopped by PID.

    lb = PrivateHAProxy(tmp_path, frontend=("127.0.0.1", port), source="127.0.0.10",
                        servers={"mx1": ("127.0.0.11", 2601), ...}).start()
    lb.status()            # {"mx1": "UP", ...} from the stats socket
    lb.wait_status("mx1", "DOWN", timeout=10)   # -> seconds it took
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from helpers.daemon import PrivateDaemon

HAPROXY = "/usr/sbin/haproxy"
SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "scale-out" / "haproxy.cfg"


def render(text: str, swaps: dict[str, str]) -> str:
    """Every swap must apply: the test runs the file we ship, not a copy."""
    for old, new in swaps.items():
        assert old in text, f"a shipped etc/scale-out file no longer has {old!r}"
        text = text.replace(old, new)
    return text


class PrivateHAProxy(PrivateDaemon):
    def __init__(self, tmp_path: Path, *, frontend: tuple[str, int], source: str,
                 servers: dict[str, tuple[str, int]]):
        self.dir = Path(tmp_path) / "haproxy"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "haproxy.log"
        self.stats = self.dir / "stats.sock"
        self.frontend, self.servers = frontend, servers
        swaps = {"/run/haproxy/qsmtp.sock": str(self.stats),
                 "192.0.2.25:25": f"{frontend[0]}:{frontend[1]}",
                 "source 10.0.0.10": f"source {source}"}
        for index, (name, (host, port)) in enumerate(servers.items(), 1):
            swaps[f"server mx{index} 10.0.0.1{index}:25"] = f"server {name} {host}:{port}"
        self.config = self.dir / "haproxy.cfg"
        self.config.write_text(render(SHIPPED.read_text(), swaps))

    def start(self) -> PrivateHAProxy:
        self.logfile = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=self.logfile,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.stats.exists() or not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.terminate()
                raise RuntimeError(f"haproxy did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(self.frontend, timeout=1):
                return True
        except OSError:
            return False

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stat(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers: name -> CSV row as a dict."""
        lines = self.command("show stat").splitlines()
        fields = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(fields, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r for r in rows
                if r.get("pxname") == "qsmtp" and r["svname"] in self.servers}

    def status(self) -> dict[str, str]:
        return {name: row["status"].split()[0] for name, row in self.stat().items()}

    def wait_status(self, name: str, want: str, timeout: float) -> float:
        started = time.monotonic()
        while True:
            if self.status().get(name) == want:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"haproxy: {name} not {want} after {timeout}s: "
                                     f"{self.status()}\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        super().stop()
        if getattr(self, "logfile", None):
            self.logfile.close()
