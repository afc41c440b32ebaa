"""Haraka (npm `Haraka`, pinned in bench/peers/haraka/package-lock.json) as
a peer: the maintained successor of qpsmtpd. Installed by `make bench`
(bench/install.sh: `npm ci` into bench/work/haraka-npm, on the machine's
Node.js), run as a private instance: its own config dir under the work dir,
cluster mode with one node per core, the bench's queue plugin
(haraka/plugins/bench_maildir.js: write, fsync, rename, fsync of new/)."""
import os
import shutil

from instance import HOSTNAME, PEERS, Server

HARAKA_DIR = PEERS / "haraka"
NPM_PREFIX = PEERS.parent / "work" / "haraka-npm"
HARAKA_BIN = NPM_PREFIX / "node_modules" / "Haraka" / "bin" / "haraka"

# Case (f): Haraka's plugins for the stack (the mapping is in
# docs/BENCHMARKS.md): access = hosts_allow, helo.checks = helo, dns-list =
# dnsbl, uribl (envelope sender) = rhsbl, spf, dkim (verify), headers, then
# rcpt_to.in_host_list for the recipient domain and the queue plugin.
STACK_PLUGINS = ["access", "helo.checks", "dns-list", "uribl", "spf", "dkim", "headers",
                 "rcpt_to.in_host_list", "bench_maildir"]
PLAIN_PLUGINS = ["bench_nordns", "rcpt_to.in_host_list", "bench_maildir"]


class Haraka(Server):
    name = "haraka"
    label = "Haraka"
    pool = True
    stack_capable = True

    def prepare(self):
        super().prepare()
        cfg = self.work / "config"
        # Haraka's own config dir as the template (what `haraka -i` copies).
        shutil.copytree(NPM_PREFIX / "node_modules" / "Haraka" / "config", cfg)
        shutil.copytree(HARAKA_DIR / "plugins", self.work / "plugins")
        md = self.work / "maildir"
        for d in ("tmp", "new", "cur"):
            (md / d).mkdir(parents=True)
        w = self.writer(cfg)
        # nodes: one per core (cluster mode); the master hands connections out.
        w("smtp.ini", f"[main]\nlisten=127.0.0.1:{self.port}\nnodes={os.cpu_count()}\n")
        w("me", HOSTNAME + "\n")
        # notice: one summary line per connection (qsmtp logs two per message).
        w("log.ini", "[main]\nlevel=notice\ntimestamps=false\nformat=default\n")
        w("host_list", "example.com\n")
        w("bench_maildir.ini", f"[main]\npath={md}\n")
        w("databytes", "26214400\n")
        w("plugins", "\n".join(STACK_PLUGINS if self.stack else PLAIN_PLUGINS) + "\n")
        if self.stack:
            self.stack_config(cfg)

    @staticmethod
    def writer(cfg):
        def w(name, text):
            (cfg / name).write_text(text)
        return w

    def stack_config(self, cfg):
        s = self.stack
        w = self.writer(cfg)
        # hosts_allow: the same deny rule as the others; everything else allowed.
        w("connect.rdns_access.blacklist", f"{s.deny_net}\n")
        w("access.ini", "[check]\nconn=true\nmail=false\nrcpt=false\nany=false\n")
        # helo: every check on, none refusing on its own (as helo's defaults),
        # private IPs not skipped (the bench's client is 127.0.0.1).
        w("helo.checks.ini", "[skip]\nprivate_ip=false\nwhitelist=false\nrelaying=false\n"
          "[check]\nvalid_hostname=true\nforward_dns=true\nrdns_match=true\n"
          "bare_ip=true\ndynamic=true\nbig_company=true\nliteral_mismatch=true\n"
          "host_mismatch=true\nproto_mismatch=false\nmatch_re=true\n")
        w("dns-list.ini", f"[main]\nperiodic_checks=0\nzones={s.dnsbl_zone}\nsearch=all\n"
          f"[{s.dnsbl_zone}]\n"
          "type=block\nipv6=false\n")
        # rhsbl: uribl on the envelope sender's domain only. Haraka merges
        # its plugins' default ini files under ours: the default zones are
        # switched off here, and its excludes list (well-known domains) emptied.
        off = "".join(f"[{z}]\nrdns=0\nhelo=0\nenvfrom=0\nfrom=0\nmsgid=0\nbody=0\n"
                      for z in ("dbl.spamhaus.org", "multi.uribl.com", "multi.surbl.org"))
        w("uribl.ini", f"[main]\ntimeout=5\n[{s.rhsbl_zone}]\nenvfrom=1\nhelo=0\nrdns=0\nfrom=0\n"
          "msgid=0\nbody=0\nno_ip_lookups=1\n" + off)
        w("uribl.excludes", "# none\n")
        w("spf.ini", "[main]\nlookup_timeout=5\n[deny]\nmfrom_fail=true\nhelo_fail=false\n")
        w("dkim.ini", "[verify]\nenabled=true\ntimeout=5\n[sign]\nenabled=false\n")

    def env(self):
        e = dict(os.environ)
        e["HARAKA"] = str(self.work)
        e["NODE_OPTIONS"] = "--require %s" % (HARAKA_DIR / "loopback_dns.js")
        e["BENCH_HARAKA_PREFIX"] = str(NPM_PREFIX)
        # Haraka's DNS goes to the bench's loopback server in every case
        # (its plugins build their own resolvers; see loopback_dns.js).
        e["BENCH_DNS"] = f"127.0.0.1:{self.dns_port}"
        if self.stack:
            e["BENCH_PUBLIC"] = "1"
        return e

    def command(self):
        return ["/usr/bin/node", str(HARAKA_BIN), "-c", str(self.work)]
