"""The servers of the comparison: qsmtp (here) and its peers (bench/peers/),
each a private instance on its own loopback port (bench/instance.py)."""
from instance import HOSTNAME, ROOT, Server
from peers.haraka import Haraka
from peers.postfix import Postfix
from peers.qpsmtpd import Qpsmtpd
from peers.simple import Aiosmtpd, SmtpSink

QSMTP = ROOT / ".venv" / "bin" / "qsmtp"


class Qsmtp(Server):
    name = "qsmtp"
    label = "qsmtp"
    pool = True
    stack_capable = True

    def config_text(self, port):
        return f"""[server]
me = "{HOSTNAME}"
listen = ["127.0.0.1:{port}"]
children = 15
idle_children = 5
max_from_ip = 0
runtime_dir = "{self.work / 'run'}"

[relay]
clients = [{'' if self.stack else '"127.0.0.0/8"'}]
domains = ["example.com"]

[queue]
backend = "maildir"
path = "{self.work / 'maildir'}"
""" + (self.stack_plugins() if self.stack else "")

    def stack_plugins(self):
        """Case (f): the plugin stack (mapping in docs/BENCHMARKS.md); the
        client is not a relay client, so every check runs."""
        s = self.stack
        dns = f'nameservers = ["127.0.0.1"]\ndns_port = {self.dns_port}\n'
        return "".join("\n[[plugins]]\n" + body for body in (
            f'name = "hosts_allow"\ndeny = ["{s.deny_net}"]\n',
            'name = "helo"\npolicy = "strict"\n' + dns,
            f'name = "dnsbl"\nzones = ["{s.dnsbl_zone}"]\n' + dns,
            f'name = "rhsbl"\nzones = ["{s.rhsbl_zone}"]\n' + dns,
            'name = "spf"\nfail_action = "deny"\n' + dns,
            'name = "dkim"\n' + dns,
            'name = "basicheaders"\n',
        ))

    def prepare(self):
        super().prepare()
        (self.work / "run").mkdir()
        (self.work / "qsmtp.toml").write_text(self.config_text(self.port))

    def command(self):
        return [str(QSMTP), "serve", "--config", str(self.work / "qsmtp.toml")]


ALL = [Qsmtp, Qpsmtpd, Haraka, Postfix, Aiosmtpd, SmtpSink]
