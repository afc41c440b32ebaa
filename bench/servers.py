"""The five servers of the comparison, each a private instance on its own
loopback port, started and stopped by PID. Nothing here touches the system
Postfix (/etc/postfix) or the system qpsmtpd service."""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QSMTP = ROOT / ".venv" / "bin" / "qsmtp"
BENCH_PY = Path("/usr/bin/python3")   # Debian python3-aiosmtpd
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
                try:
                    s.sendall(b"QUIT\r\n")
                except OSError:
                    pass
                return dt
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(step)
    raise RuntimeError("no 220 banner on port %d within %.0fs" % (port, deadline_s))


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
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Server:
    name = "?"
    label = "?"
    durable = True
    pool = False          # has a worker pool (PSS per extra worker is meaningful)

    def __init__(self, port, work):
        self.port = port
        self.work = Path(work) / self.name
        self.proc = None
        self.log = None

    # --- lifecycle -------------------------------------------------------
    def prepare(self):
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)

    def command(self):
        raise NotImplementedError

    def env(self):
        return None

    def start(self):
        """Start; return seconds from launch to the first 220 banner."""
        self.log = open(self.work / "server.log", "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=self.env(),
                                     cwd=self.work, start_new_session=True)
        wait_banner(self.port)
        return time.monotonic() - t0

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None
        if self.log:
            self.log.close()
            self.log = None

    def root_pid(self):
        return self.proc.pid

    # --- storage -----------------------------------------------------------
    def maildir_new(self):
        return None

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


class SmtpSink(Server):
    name = "smtp-sink"
    label = "smtp-sink"
    durable = False

    def command(self):
        # -u: required as root; 1000 = listen backlog.
        return ["/usr/sbin/smtp-sink", "-u", "nobody",
                "127.0.0.1:%d" % self.port, "1000"]


class Aiosmtpd(Server):
    name = "aiosmtpd"
    label = "aiosmtpd"

    def maildir_new(self):
        return self.work / "maildir" / "new"

    def command(self):
        return [str(BENCH_PY), str(HERE / "aiosmtpd_server.py"),
                "--port", str(self.port), "--maildir", str(self.work / "maildir")]


class Qpsmtpd(Server):
    name = "qpsmtpd"
    label = "qpsmtpd-prefork"
    pool = True

    def maildir_new(self):
        return self.work / "maildir" / "new"

    def prepare(self):
        super().prepare()
        cfg = self.work / "config"
        # Debian's /etc/qpsmtpd as the template, then a minimal plugin set.
        shutil.copytree("/etc/qpsmtpd", cfg)
        for f in cfg.iterdir():
            if f.name.startswith("debian-") or f.name in ("debconf-settings",):
                f.unlink()
        md = self.work / "maildir"
        for d in ("tmp", "new", "cur"):
            (md / d).mkdir(parents=True, exist_ok=True)
        (self.work / "spool").mkdir(mode=0o700)
        w = lambda name, text: (cfg / name).write_text(text)
        # relay: 127.0.0.1 may relay; rcpt_ok accepts relay clients and
        # rcpthosts; queue/maildir stores. No dnsbl/rhsbl/spf/helo checks.
        w("plugins", "relay\nrcpt_ok\nqueue/maildir %s\n" % md)
        w("relayclients", "127.0.0.1\n")
        w("rcpthosts", "example.com\n")
        w("me", HOSTNAME + "\n")
        w("spool_dir", str(self.work / "spool") + "\n")
        w("plugin_dirs", "/usr/share/qpsmtpd/plugins\n")
        w("logging", "")
        w("loglevel", "2\n")          # LOGCRIT: no per-message log lines
        w("databytes", "26214400\n")
        # qpsmtpd-prefork insists on --user: it runs as Debian's "qpsmtpd".
        q = pwd.getpwnam("qpsmtpd")
        for d in (md, md / "tmp", md / "new", md / "cur", self.work / "spool"):
            os.chown(d, q.pw_uid, q.pw_gid)

    def env(self):
        e = dict(os.environ)
        e["QPSMTPD_CONFIG"] = str(self.work / "config")
        return e

    def command(self):
        # -T: the script's #! line has it. -MQpNoDNS: no PTR lookups.
        return ["/usr/bin/perl", "-T", "-I", str(HERE / "peers"), "-MQpNoDNS",
                "/usr/bin/qpsmtpd-prefork", "--listen-address", "127.0.0.1",
                "--port", str(self.port), "--children", "15",
                "--idle-children", "5", "--max-from-ip", "0",
                "--user", "qpsmtpd"]
        # (--renice-parent left at its default 5: passing it on the command
        # line trips a taint error in the children's setpriority.)


class Qsmtp(Server):
    name = "qsmtp"
    label = "qsmtp"
    pool = True

    def maildir_new(self):
        return self.work / "maildir" / "new"

    def config_text(self, port):
        return f"""[server]
me = "{HOSTNAME}"
listen = ["127.0.0.1:{port}"]
children = 15
idle_children = 5
max_from_ip = 0
runtime_dir = "{self.work / 'run'}"

[relay]
clients = ["127.0.0.0/8"]
domains = ["example.com"]

[queue]
backend = "maildir"
path = "{self.work / 'maildir'}"
"""

    def prepare(self):
        super().prepare()
        (self.work / "run").mkdir()
        (self.work / "qsmtp.toml").write_text(self.config_text(self.port))

    def command(self):
        return [str(QSMTP), "serve", "--config", str(self.work / "qsmtp.toml")]


class Postfix(Server):
    name = "postfix"
    label = "Postfix smtpd"
    pool = True

    def prepare(self):
        super().prepare()
        etc, spool, data, vmail = (self.work / d for d in ("etc", "spool", "data", "vmail"))
        for d in (etc, spool, data, vmail):
            d.mkdir()
        nobody = pwd.getpwnam("nobody")
        for d in ("tmp", "new", "cur"):
            (vmail / "box" / d).mkdir(parents=True)
        for dirpath, dirnames, filenames in os.walk(vmail):
            os.chown(dirpath, nobody.pw_uid, nobody.pw_gid)
        pf = pwd.getpwnam("postfix")
        os.chown(data, pf.pw_uid, pf.pw_gid)
        (etc / "main.cf").write_text(f"""# throwaway private instance for bench/run.py
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {spool}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = {HOSTNAME}
mydomain = example.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
# durable storage: delivered by virtual(8) into one maildir
virtual_mailbox_domains = example.com
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
virtual_minimum_uid = 1
# no DNS at all
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
# same client limits as the other servers (one client IP, many sessions)
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_banner = $myhostname ESMTP
message_size_limit = 26214400
biff = no
maillog_file_prefixes = {self.work}
maillog_file = {self.work}/maillog
""")
        (etc / "master.cf").write_text(f"""# service type private unpriv chroot wakeup maxproc command
127.0.0.1:{self.port} inet n - n - - smtpd
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
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""")

    def env(self):
        e = dict(os.environ)
        e["MAIL_CONFIG"] = str(self.work / "etc")
        return e

    def command(self):
        # start-fg: master(8) stays in the foreground as our child (its PID).
        return ["/usr/sbin/postfix", "-c", str(self.work / "etc"), "start-fg"]

    def root_pid(self):
        # postfix start-fg execs the master, but via postfix-script; find it.
        pidf = self.work / "spool" / "pid" / "master.pid"
        try:
            return int(pidf.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return self.proc.pid

    def maildir_new(self):
        return self.work / "vmail" / "box" / "new"

    def queued(self):
        n = 0
        for q in ("incoming", "active", "deferred", "hold", "maildrop"):
            for dirpath, _, files in os.walk(self.work / "spool" / q):
                n += len(files)
        return n

    def stored(self):
        # stored = delivered into the maildir + still in the (fsync'd) queue
        return count_files(self.maildir_new()) + self.queued()

    def settle(self, expected, timeout=60):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.queued() == 0 and count_files(self.maildir_new()) >= expected:
                break
            time.sleep(0.05)
        return self.stored()

    def stop(self):
        if self.proc is not None:
            # TERM to the master (by PID) stops the whole instance.
            stop_pid(self.root_pid())
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                stop_pid(self.proc)
            self.proc = None
        if self.log:
            self.log.close()
            self.log = None


ALL = [Qsmtp, Qpsmtpd, Postfix, Aiosmtpd, SmtpSink]
