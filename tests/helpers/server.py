"""Start real `qsmtp serve` daemons for tests.

    with Server(tmp_path, children=4, idle_children=2) as srv:
        srv.start()                      # waits for the registry to say running
        smtplib.SMTP(srv.host, srv.port)
        srv.snapshot()["workers"]        # the registry, as qsmtpctl sees it
    # stopped by PID (TERM, then KILL), SysV objects checked gone

Every daemon gets its own temp runtime_dir, maildir and free port.  Stderr
goes to `srv.log_path`; `srv.log()` reads it.  `socket_activate=["smtp"]`
starts it under systemd-socket-activate (one -l per name), with a
NOTIFY_SOCKET the helper binds: `srv.notify.messages` are (time, text).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QSMTP = str(Path(sys.executable).with_name("qsmtp"))
ACTIVATE = "/usr/bin/systemd-socket-activate"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def sysv_ids() -> tuple[set[str], set[str]]:
    """(shm ids, sem ids) currently in the kernel."""
    out = []
    for kind in ("shm", "sem"):
        with open(f"/proc/sysvipc/{kind}") as handle:
            lines = handle.read().splitlines()[1:]
        out.append({line.split()[1] for line in lines if line.strip()})
    return out[0], out[1]


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class NotifyListener:
    """A NOTIFY_SOCKET like systemd's: collects (monotonic time, message)."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        return [text for _, text in self.messages]

    def first(self, prefix: str) -> tuple[float, str] | None:
        for when, text in self.messages:
            if any(line.startswith(prefix) for line in text.splitlines()):
                return when, text
        return None

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class Server:
    def __init__(self, tmp_path: Path, *, listen: list[str] | None = None,
                 flags: list[str] | None = None, extra_toml: str = "",
                 socket_activate: list[str] | None = None, **server_keys):
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.listen = listen if listen is not None else [f"127.0.0.1:{self.port}"]
        self.flags = list(flags or [])
        self.socket_activate = socket_activate
        self.runtime_dir = self.dir / "run"
        self.maildir = self.dir / "maildir"
        self.log_path = self.dir / "qsmtp.log"
        self.config_path = self.dir / "qsmtp.toml"
        keys = {"me": "mx.test", "children": 4, "idle_children": 2, "grace": 5,
                "timeout": 30, "runtime_dir": str(self.runtime_dir),
                "state_dir": str(self.dir / "state")}  # never the host's /var/lib
        keys.update(server_keys)
        self.write_config(keys, extra_toml)
        self.proc: subprocess.Popen | None = None
        self.notify: NotifyListener | None = None
        self.seen_pids: set[int] = set()
        self.sysv_seen: tuple[set[str], set[str]] = (set(), set())

    # ---- config --------------------------------------------------------------
    def write_config(self, keys: dict, extra_toml: str = "") -> None:
        lines = ["[server]", f"listen = {_toml(self.listen)}"]
        lines += [f"{key} = {_toml(value)}" for key, value in keys.items()]
        text = "\n".join(lines) + "\n" + extra_toml
        if "[queue]" not in extra_toml:
            text += f'\n[queue]\npath = "{self.maildir}"\n'
        if "[relay]" not in extra_toml:
            text += '\n[relay]\ndomains = ["example.test"]\n'
        self.config_path.write_text(text)

    # ---- life cycle ------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [QSMTP, "serve", "--config", str(self.config_path), *self.flags]
        if not self.socket_activate:
            return cmd
        names = ":".join(self.socket_activate)
        self.ports = [self.port] + [free_port() for _ in self.socket_activate[1:]]
        pre = [ACTIVATE]
        for port in self.ports:
            pre += ["-l", f"127.0.0.1:{port}"]
        pre += [f"--fdname={names}", "-E", "NOTIFY_SOCKET", "-E", "PYTHONUNBUFFERED"]
        for name in getattr(self, "extra_activate_env", ()):
            pre += ["-E", name]
        return pre + cmd

    def start(self, wait: bool = True, timeout: float = 15.0) -> Server:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.socket_activate:
            self.notify = NotifyListener(str(self.dir / "notify.sock"))
            env["NOTIFY_SOCKET"] = self.notify.path
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.dir)
        if wait and not self.socket_activate:
            self.wait_running(timeout)
        return self

    def activate(self, port: int | None = None, timeout: float = 10.0) -> socket.socket:
        """The first connection, which makes systemd-socket-activate exec us;
        retried while it is not listening yet."""
        def attempt():
            try:
                return socket.create_connection(("127.0.0.1", port or self.port), timeout=10)
            except ConnectionRefusedError:
                return None
        return wait_for(attempt, timeout, what="systemd-socket-activate listening")

    def run_once(self, timeout: float = 15.0) -> subprocess.CompletedProcess:
        """Run a command that is expected to exit (bad flags, --version)."""
        return subprocess.run(self.command(), capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_running(self, timeout: float = 15.0) -> dict:
        def running():
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"qsmtp exited {self.proc.returncode}:\n{self.log()}")
            snap = self.snapshot(quiet=True)
            if not snap or snap["supervisor"]["pid"] != self.pid:
                return None  # not yet created, or a stale one of an earlier run
            return snap if snap["supervisor"]["state"] == "running" else None
        return wait_for(running, timeout, what="qsmtp running")

    def snapshot(self, quiet: bool = False) -> dict | None:
        from qsmtp.registry import Registry, RegistryError

        try:
            reg = Registry.attach(str(self.runtime_dir))
        except RegistryError:
            if quiet:
                return None
            raise
        try:
            self.sysv_seen[0].add(str(reg.shm.id))
            if reg.sem is not None:
                self.sysv_seen[1].add(str(reg.sem.id))
            snap = reg.snapshot()
        finally:
            reg.detach()
        for worker in snap["workers"]:
            if worker["pid"]:
                self.seen_pids.add(worker["pid"])
        return snap

    def workers(self) -> list[int]:
        pids = children_of(self.pid)
        self.seen_pids.update(pids)
        return pids

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """TERM by PID, wait; KILL only if it does not stop in time."""
        if self.proc is None:
            return 0
        self.workers()
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def cleanup(self) -> None:
        """Kill anything of ours still around (by PID), close files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for pid in self.seen_pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.notify:
            self.notify.close()
        if getattr(self, "log_file", None):
            self.log_file.close()

    def leaked_sysv(self) -> list[str]:
        shm, sem = sysv_ids()
        return ([f"shm {i}" for i in self.sysv_seen[0] & shm]
                + [f"sem {i}" for i in self.sysv_seen[1] & sem])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def connect(port: int, host: str = "127.0.0.1", source: str | None = None,
            timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    """A raw client: connect, read the first reply line (220 or 421)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source:
        sock.bind((source, 0))
    sock.connect((host, port))
    return sock, read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    """Bytes up to and including the next LF (less if the peer closes)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data


class ServerPool:
    """The daemons one test starts, and the checks that they ended cleanly:
    stopped by PID, workers gone, SysV objects removed (plus any log check
    the caller adds). Backs the `serve` and `fleet` fixtures."""

    def __init__(self, base: Path, gone_within: float = 5.0):
        self.base, self.gone_within = base, gone_within
        self.servers: list[Server] = []

    def make(self, *, start: bool = True, name: str | None = None, base: Path | None = None,
             allow_log: tuple[str, ...] = (), **kwargs) -> Server:
        srv = Server((base or self.base) / (name or f"s{len(self.servers)}"), **kwargs)
        srv.allow_log = allow_log
        self.servers.append(srv)
        if start:
            srv.start()
        return srv

    def close(self, log_check=None) -> list[str]:
        """Stops every daemon; returns what went wrong (empty when clean)."""
        problems = []
        for srv in self.servers:
            try:
                srv.stop()
                wait_for(lambda: not any(alive(p) for p in srv.seen_pids if p != srv.pid),
                         self.gone_within, what="workers gone")
            except AssertionError as exc:
                problems.append(str(exc))
            finally:
                srv.cleanup()
            leaked = srv.leaked_sysv()
            if leaked:
                problems.append(f"SysV objects left behind: {leaked}\n{srv.log()[-3000:]}")
            if log_check is not None:
                problems.extend(log_check(srv))
        return problems
