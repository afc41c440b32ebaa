"""Private Postfix pieces for tests: a full Postfix instance and smtp-sink.

Never touches the system instance: everything lives in a fresh directory
under /tmp (config_directory, queue_directory, data_directory, the mail it
delivers), listens on 127.0.0.1:<free port>, sends nothing anywhere
(default_transport = error), does no DNS, and is stopped by its own
`postfix -c DIR stop` (or by its master's PID).

    from helpers.postfix import private_postfix, smtp_sink   # pytest fixtures
    def test_x(private_postfix):
        pf = private_postfix(domains=["example.test"])
        ... send to 127.0.0.1:pf.port ...
        (msg,) = pf.wait_for_messages(1)     # bytes of each delivered file

Mail for `domains` is delivered by virtual(8) into one Maildir
(`pf.maildir`); everything else is refused at RCPT (no relaying).
`smtp_sink(lmtp=False, extra_args=())` starts `smtp-sink` instead: fast,
dumps each transaction to a file (LF line ends), can speak LMTP (-L) and
inject failures (-r/-f/-q/-Q ...; see smtp-sink(1)).

Both need root (Postfix daemons drop to the `postfix` user); the fixtures
skip the test when Postfix or root is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

POSTFIX = "/usr/sbin/postfix"
SMTP_SINK = "/usr/sbin/smtp-sink"
DAEMON_DIR = "/usr/lib/postfix/sbin"

# Only the services a receive-and-deliver-locally instance needs; no chroot
# (the queue directory is not set up as a chroot jail).
MASTER_CF = """\
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
config_directory = {base}/etc
queue_directory = {base}/spool
data_directory = {base}/data
command_directory = /usr/sbin
daemon_directory = {daemon_dir}
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = upstream.test
mydomain = upstream.test
myorigin = upstream.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
relay_domains =
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {base}
virtual_mailbox_maps = static:mail/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
default_transport = error:private test instance delivers nothing remotely
relay_transport = error:private test instance delivers nothing remotely
alias_maps =
alias_database =
local_recipient_maps =
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtputf8_enable = yes
biff = no
message_size_limit = 52428800
virtual_mailbox_limit = 0
# 127.0.0.1 must not count as "local": no From/Date/Message-ID added, so a
# delivered message can be compared with what was sent.
local_header_rewrite_clients =
smtpd_banner = $myhostname ESMTP private-test-postfix
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Wait until something answers on host:port with a greeting line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                if sock.recv(512):
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answers on {host}:{port}")


def _base_dir(prefix: str) -> Path:
    # Under /tmp and world-traversable: Postfix daemons run as `postfix`.
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    return base


def _files_in(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_mtime_ns)


def _wait_for_files(directory: Path, count: int, timeout: float) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        files = _files_in(directory)
        if len(files) >= count or time.monotonic() > deadline:
            return [p.read_bytes() for p in files]
        time.sleep(0.05)


class PrivatePostfix:
    def __init__(self, domains: list[str]):
        self.base = _base_dir("qsmtp-postfix-")
        self.port = free_port()
        self.maildir = self.base / "mail"
        self.domains = domains
        self.started = False

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    def start(self) -> PrivatePostfix:
        owner = pwd.getpwnam("postfix")
        for sub in ("etc", "spool", "data", "mail"):
            (self.base / sub).mkdir()
        for sub in ("data", "mail"):  # written by Postfix daemons as `postfix`
            os.chown(self.base / sub, owner.pw_uid, owner.pw_gid)
        (self.config_dir / "main.cf").write_text(MAIN_CF.format(
            base=self.base, daemon_dir=DAEMON_DIR, domains=", ".join(self.domains),
            uid=owner.pw_uid, gid=owner.pw_gid))
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        self._postfix("start")
        self.started = True
        wait_for_port(self.port)
        return self

    def _postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.config_dir), *args], check=True,
                              capture_output=True, text=True, timeout=60)

    def master_pid(self) -> int | None:
        try:
            return int((self.base / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def wait_for_messages(self, count: int, timeout: float = 15.0) -> list[bytes]:
        """Delivered messages (files in the Maildir's new/), oldest first."""
        return _wait_for_files(self.maildir / "new", count, timeout)

    def log(self) -> str:
        try:
            return (self.base / "maillog").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.started:
            pid = self.master_pid()
            try:
                self._postfix("stop")
            except (subprocess.SubprocessError, OSError):
                if pid:
                    _kill(pid)
            _wait_gone(pid)
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)


class SmtpSink:
    """`smtp-sink` on 127.0.0.1:<port> (or a unix socket) dumping to files."""

    def __init__(self, lmtp: bool = False, extra_args: tuple[str, ...] = (),
                 unix: bool = False):
        self.base = _base_dir("qsmtp-sink-")
        self.dumps = self.base / "dump"
        self.dumps.mkdir()
        shutil.chown(self.dumps, "postfix")
        self.port = free_port()
        self.socket_path = str(self.base / "lmtp.sock") if unix else None
        self.lmtp, self.extra_args = lmtp, tuple(extra_args)
        self.proc: subprocess.Popen | None = None

    @property
    def upstream(self) -> str:
        return f"unix:{self.socket_path}" if self.socket_path else f"127.0.0.1:{self.port}"

    def start(self) -> SmtpSink:
        where = f"unix:{self.socket_path}" if self.socket_path else f"127.0.0.1:{self.port}"
        argv = [SMTP_SINK, "-u", "postfix", "-d", f"{self.dumps}/%H%M%S.",
                *(["-L"] if self.lmtp else []), *self.extra_args, where, "64"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if self.socket_path:
            _wait_for_path(self.socket_path, self.proc)
        else:
            wait_for_port(self.port)
        return self

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[bytes]:
        return _wait_for_files(self.dumps, count, timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def _wait_for_path(path: str, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"smtp-sink did not create {path}")
        time.sleep(0.05)
    os.chmod(path, 0o777)


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def _wait_gone(pid: int | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _require() -> None:
    # make test installs Postfix and runs as root; anything else is a failure
    assert os.geteuid() == 0, "a private Postfix instance needs root"
    for tool in (POSTFIX, SMTP_SINK):
        assert os.access(tool, os.X_OK), f"{tool} missing: run the tests through make test"


@contextmanager
def running_postfix(domains: list[str]) -> Iterator[PrivatePostfix]:
    instance = PrivatePostfix(domains)
    try:
        yield instance.start()
    finally:
        instance.stop()


@pytest.fixture()
def private_postfix():
    """Factory fixture: `private_postfix(domains=[...])` -> started instance."""
    _require()
    started: list[PrivatePostfix] = []

    def start(domains: list[str] = ["example.test"]) -> PrivatePostfix:  # noqa: B006
        instance = PrivatePostfix(list(domains))
        started.append(instance)
        return instance.start()
    yield start
    for instance in started:
        instance.stop()


@pytest.fixture()
def smtp_sink():
    """Factory fixture: `smtp_sink(lmtp=False, extra_args=(), unix=False)`."""
    _require()
    started: list[SmtpSink] = []

    def start(**kwargs) -> SmtpSink:
        sink = SmtpSink(**kwargs)
        started.append(sink)
        return sink.start()
    yield start
    for sink in started:
        sink.stop()
