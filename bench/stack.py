"""Case (f)'s fixture: the loopback DNS server every server asks (in every
case: no query leaves the machine) and the DKIM-signed message smtp-source
sends in (f).

    .venv/bin/python bench/stack.py --work DIR

makes a DKIM key (tests/helpers/dkim_keys.py), signs DIR/message.eml with
dkimpy, starts tests/helpers/dns_server.DnsServer on 127.0.0.1 with the
records below, writes its port to DIR/dns.port and serves until its stdin
closes (bench/run.py holds the pipe) or it is sent SIGTERM. Caching: none
here; each server caches (or not) as it does in production.
"""
import argparse
import json
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DENY_NET = "192.0.2.0/24"          # hosts_allow: a network refused (never us)
DNSBL_ZONE = "bl.bench.test"       # 127.0.0.2 listed (the usual test entry)
RHSBL_ZONE = "rhs.bench.test"      # listed.example.net listed
SENDER_DOMAIN = "qsmtp-bench.org"  # SPF pass for 127.0.0.0/8, DKIM d= (a real TLD: uribl)
SENDER = "sender@" + SENDER_DOMAIN
RCPT = "rcpt@example.com"
HELO = "client.example.com"        # smtp-source -M: A and PTR both match
SELECTOR = "bench"


@dataclass(frozen=True)
class Fixture:
    """What the servers' stack configurations need (bench/run.py builds it)."""
    dns_port: int
    message: Path
    deny_net: str = DENY_NET
    dnsbl_zone: str = DNSBL_ZONE
    rhsbl_zone: str = RHSBL_ZONE
    sender_domain: str = SENDER_DOMAIN


def records(key_txt):
    return {
        HELO: {"A": ["127.0.0.1"]},
        "1.0.0.127.in-addr.arpa": {"PTR": [HELO + "."]},
        SENDER_DOMAIN: {"A": ["127.0.0.1"], "MX": [f"10 mx.{SENDER_DOMAIN}."],
                        "TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
        "mx." + SENDER_DOMAIN: {"A": ["127.0.0.1"]},
        f"{SELECTOR}._domainkey.{SENDER_DOMAIN}": {"TXT": [key_txt]},
        "2.0.0.127." + DNSBL_ZONE: {"A": ["127.0.0.2"], "TXT": ["listed for the bench"]},
        "listed.example.net." + RHSBL_ZONE: {"A": ["127.0.0.2"]},
        "example.com": {"A": ["127.0.0.1"], "MX": ["10 mx.example.com."]},
        "mx.example.com": {"A": ["127.0.0.1"]},
    }


def signed_message(key_path):
    """A 5 KB message signed (relaxed/relaxed) over its CRLF form, which is
    what smtp-source -F sends (it appends CRLF to every line)."""
    import dkim
    body = "".join(f"line {i:04d} of the bench message, some text to fill it up to five kB\r\n"
                   for i in range(70))
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    head = (f"From: Sender <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: bench case f\r\n"
            f"Date: {date}\r\nMessage-ID: <bench-f@{SENDER_DOMAIN}>\r\n\r\n")
    msg = (head + body).encode()
    sig = dkim.sign(msg, SELECTOR.encode(), SENDER_DOMAIN.encode(),
                    key_path.read_bytes(), canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + msg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    from helpers.dkim_keys import make_key
    from helpers.dns_server import DnsServer
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    key = make_key(work / "dkim" / (SELECTOR + ".pem"))
    # smtp-source -F appends CRLF to each line: the file holds LF lines.
    (work / "message.eml").write_bytes(signed_message(key.path).replace(b"\r\n", b"\n"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with DnsServer(records(key.txt), ttl=3600) as dns:
        (work / "dns.port").write_text(str(dns.port))
        try:
            sys.stdin.read()      # until bench/run.py closes the pipe (or dies)
        finally:
            # What was asked, for checking the stacks' equivalence by hand.
            counts = Counter(f"{kind} {name}" for name, kind, _ in dns.queries)
            (work / "queries.json").write_text(json.dumps(counts.most_common(), indent=0))


if __name__ == "__main__":
    main()
