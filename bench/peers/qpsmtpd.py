"""qpsmtpd-prefork (Debian's qpsmtpd), the program qsmtp replaces, as a
peer: a private instance with its own config dir (Debian's /etc/qpsmtpd as
the template) under the work dir, running as Debian's "qpsmtpd" user. The
system qpsmtpd service is never touched."""
import os
import pwd
import shutil
import subprocess

from instance import HOSTNAME, PEERS, Server


def _ipc_of(uid):
    """SysV shared memory and semaphore ids owned by uid (IPC::Shareable's,
    which qpsmtpd-prefork does not always remove when it stops)."""
    found = set()
    for kind, flag, id_col, uid_col in (("shm", "-m", 1, 7), ("sem", "-s", 1, 4)):
        with open(f"/proc/sysvipc/{kind}") as f:
            for line in f.read().splitlines()[1:]:
                cols = line.split()
                if int(cols[uid_col]) == uid:
                    found.add((flag, cols[id_col]))
    return found


class Qpsmtpd(Server):
    name = "qpsmtpd"
    label = "qpsmtpd-prefork"
    pool = True
    stack_capable = True
    other_users = True     # it runs as Debian's "qpsmtpd" user

    def prepare(self):
        super().prepare()
        self.ipc_before = _ipc_of(pwd.getpwnam("qpsmtpd").pw_uid)
        cfg = self.work / "config"
        # Our two preloaded modules, where the qpsmtpd user can read them
        # (perl dies on an @INC directory it may not enter).
        (self.work / "perl").mkdir()
        for pm in ("QpLoopDNS.pm", "QpNoDNS.pm"):
            shutil.copy(PEERS / pm, self.work / "perl" / pm)
        # Debian's /etc/qpsmtpd as the template, then a minimal plugin set.
        shutil.copytree("/etc/qpsmtpd", cfg)
        for f in cfg.iterdir():
            if f.name.startswith("debian-") or f.name in ("debconf-settings",):
                f.unlink()
        md = self.work / "maildir"
        for d in ("tmp", "new", "cur"):
            (md / d).mkdir(parents=True, exist_ok=True)
        (self.work / "spool").mkdir(mode=0o700)

        def w(name, text):
            (cfg / name).write_text(text)
        if self.stack:
            self.stack_config(w, md)
        else:
            # relay: 127.0.0.1 may relay; rcpt_ok accepts relay clients and
            # rcpthosts; queue/maildir stores. No dnsbl/rhsbl/spf/helo checks.
            w("plugins", f"relay\nrcpt_ok\nqueue/maildir {md}\n")
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

    def stop(self):
        super().stop()
        # Only the objects that appeared while this instance ran: ours.
        for flag, ident in _ipc_of(pwd.getpwnam("qpsmtpd").pw_uid) - self.ipc_before:
            subprocess.run(["ipcrm", flag, ident], capture_output=True)

    def stack_config(self, w, md):
        """Case (f): the plugin stack (mapping in docs/BENCHMARKS.md). The
        client is not a relay client here: rcpt_ok accepts rcpthosts."""
        s = self.stack
        w("plugins", "\n".join([
            "hosts_allow", "helo policy strict reject 1", "dnsbl reject 1",
            "rhsbl reject 1", "sender_permitted_from reject 3", "dkim reject 0",
            "headers reject 1", "rcpt_ok", f"queue/maildir {md}"]) + "\n")
        w("hosts_allow", f"{s.deny_net} bench: not allowed\n")
        w("dnsbl_zones", s.dnsbl_zone + "\n")
        w("rhsbl_zones", s.rhsbl_zone + "\n")
        w("relayclients", "")

    def env(self):
        e = dict(os.environ)
        e["QPSMTPD_CONFIG"] = str(self.work / "config")
        e["BENCH_DNS_PORT"] = str(self.dns_port)
        return e

    def command(self):
        # -T: the script's #! line has it. -MQpLoopDNS: every Net::DNS
        # resolver asks the bench's loopback server. -MQpNoDNS (cases a-e):
        # no PTR lookup of the client, as the other servers there.
        mods = ["-MQpLoopDNS"] + ([] if self.stack else ["-MQpNoDNS"])
        return ["/usr/bin/perl", "-T", "-I", str(self.work / "perl")] + mods + [
                "/usr/bin/qpsmtpd-prefork", "--listen-address", "127.0.0.1",
                "--port", str(self.port), "--children", "15",
                "--idle-children", "5", "--max-from-ip", "0",
                "--user", "qpsmtpd"]
        # (--renice-parent left at its default 5: passing it on the command
        # line trips a taint error in the children's setpriority.)
