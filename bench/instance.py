"""What every server of the comparison shares: a private instance on its own
loopback port with its own work dir, started and stopped by PID (never by
name), its stored messages counted in a maildir. The servers themselves:
bench/servers.py (qsmtp and the list of all), bench/peers/ (the others)."""
import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"
BENCH_PY = Path("/usr/bin/python3")   # Debian's python3-aiosmtpd, matplotlib
VENV_PY = ROOT / ".venv" / "bin" / "python"   # dnspython, dkimpy (case f)
HOSTNAME = "bench.example.test"


def count_files(d):
    try:
        return sum(1 for e in os.scandir(d) if e.is_file())
    except FileNotFoundError:
        return 0


def clear_dir(d):
    try:
        for e in os.scandir(d):
            if e.is_file():
                os.unlink(e.path)
    except FileNotFoundError:
        pass


def wait_banner(port, deadline_s=20.0, step=0.002):
    """Poll-connect until the port answers with a 220 line; returns seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(step)
            continue
        try:
            line = s.makefile("rb").readline()
            if line.startswith(b"220"):
                dt = time.monotonic() - t0
                with contextlib.suppress(OSError):
                    s.sendall(b"QUIT\r\n")
                return dt
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(step)
    raise RuntimeError(f"no 220 banner on port {port} within {deadline_s:.0f}s")


def stop_pid(proc_or_pid, timeout=15):
    """TERM the given process (ours, by PID), wait, KILL if it lingers."""
    if isinstance(proc_or_pid, subprocess.Popen):
        p = proc_or_pid
        if p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        return
    pid = proc_or_pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def others_can_enter(path):
    """True when every directory from / down to path lets other users in
    (x bit for others): a checkout in a mode-0700 home does not."""
    path = Path(path).resolve()
    return all(os.stat(d).st_mode & stat.S_IXOTH for d in [path, *path.parents])


class Server:
    name = "?"
    label = "?"
    durable = True
    pool = False          # has a worker pool (PSS per extra worker is meaningful)
    # Its processes run as a user of their own (qpsmtpd, postfix, nobody),
    # which must enter its work dir.
    other_users = False

    stack_capable = False  # can run case (f)'s plugin stack

    def __init__(self, port, work, dns_port, stack=None):
        """dns_port: the bench's loopback DNS server (bench/stack.py), the
        only one any server may ask. stack: None for the plain configuration
        of cases (a)-(e), or case (f)'s stack.Fixture for the plugin stack."""
        self.port = port
        self.dns_port = dns_port
        self.stack = stack
        self.work = Path(work) / (self.name + ("-f" if stack else ""))
        self.proc = None
        self.log = None

    # --- lifecycle -------------------------------------------------------
    def prepare(self):
        self.home = self.work
        if self.other_users and not others_can_enter(self.work.parent):
            # A checkout in a mode-0700 home: the work dir goes where the
            # server's own users can enter, until stop() (release_work).
            self.work = Path(tempfile.mkdtemp(prefix=f"qsmtp-bench-{self.name}-"))
            print(f"{self.name}: work dir {self.work} (its users can't enter the checkout)",
                  flush=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        if self.other_users:
            self.work.chmod(0o755)

    def release_work(self):
        """After the stop: a work dir moved out of the checkout leaves its
        top-level files (logs, configs) in the usual place and goes."""
        home = getattr(self, "home", self.work)
        if self.work == home:
            return
        home.mkdir(parents=True, exist_ok=True)
        for e in os.scandir(self.work):
            if e.is_file(follow_symlinks=False):
                shutil.copy(e.path, home / e.name)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work = home

    def command(self):
        raise NotImplementedError

    def env(self):
        return None

    def start(self):
        """Start; return seconds from launch to the first 220 banner."""
        # A 220 on the port proves nothing when something else already
        # listens there (another bench run): its server would be measured.
        with socket.socket() as probe:
            # SO_REUSEADDR: connections of an earlier run in TIME_WAIT don't
            # count; a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise RuntimeError(f"{self.name}: port {self.port} is taken ({exc.strerror}): "
                                   "another bench run?") from None
        # open for the instance's life; closed in stop()
        self.log = open(self.work / "server.log", "ab")  # noqa: SIM115
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=self.env(),
                                     cwd=self.work, start_new_session=True)
        wait_banner(self.port)
        return time.monotonic() - t0

    def stop(self):
        if self.proc is not None:
            self.terminate()
            self.proc = None
        if self.log:
            self.log.close()
            self.log = None
        self.release_work()

    def terminate(self):
        """End the running instance (ours, by PID)."""
        stop_pid(self.proc)

    def root_pid(self):
        return self.proc.pid

    # --- storage -----------------------------------------------------------
    def maildir_new(self):
        """Where a stored message lands (None: the server stores nothing)."""
        return self.work / "maildir" / "new"

    def stored(self):
        d = self.maildir_new()
        return count_files(d) if d else None

    def settle(self, expected, timeout=60):
        """Wait until background work (delivery) for this run is done."""
        return self.stored()

    def reset_store(self):
        d = self.maildir_new()
        if d:
            clear_dir(d)
            clear_dir(d.parent / "tmp")


