"""The two small peers: aiosmtpd (Debian's python3-aiosmtpd with the
maildir handler in bench/peers/aiosmtpd_server.py) and Postfix's smtp-sink
(accepts and discards: the ceiling of this client on this machine)."""
from instance import BENCH_PY, PEERS, Server


class SmtpSink(Server):
    name = "smtp-sink"
    label = "smtp-sink"
    durable = False

    def maildir_new(self):
        return None  # discards every message

    def command(self):
        # -u: required as root; 1000 = listen backlog.
        return ["/usr/sbin/smtp-sink", "-u", "nobody",
                f"127.0.0.1:{self.port}", "1000"]


class Aiosmtpd(Server):
    name = "aiosmtpd"
    label = "aiosmtpd"

    def command(self):
        return [str(BENCH_PY), str(PEERS / "aiosmtpd_server.py"),
                "--port", str(self.port), "--maildir", str(self.work / "maildir")]
