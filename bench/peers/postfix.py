"""Postfix smtpd as a peer: a private instance (own config_directory and
queue_directory under the work dir) delivering through virtual(8) into one
maildir. Never touches the system Postfix (/etc/postfix)."""
import os
import pwd
import subprocess
import time

from instance import HOSTNAME, Server, count_files, stop_pid


class Postfix(Server):
    name = "postfix"
    label = "Postfix smtpd"
    pool = True
    other_users = True     # postfix (queue), nobody (virtual delivery)

    def prepare(self):
        super().prepare()
        etc, spool, data, vmail = (self.work / d for d in ("etc", "spool", "data", "vmail"))
        for d in (etc, spool, data, vmail):
            d.mkdir()
        nobody = pwd.getpwnam("nobody")
        for d in ("tmp", "new", "cur"):
            (vmail / "box" / d).mkdir(parents=True)
        for dirpath, _dirnames, _filenames in os.walk(vmail):
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
        (etc / "master.cf").write_text(f"""# service type private unpriv chroot wakeup maxproc cmd
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
            for _dirpath, _, files in os.walk(self.work / "spool" / q):
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

    def terminate(self):
        # TERM to the master (by PID) stops the whole instance.
        stop_pid(self.root_pid())
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            stop_pid(self.proc)
