"""The DNS plugins loaded the way the server loads them (a TOML config ->
qsmtp.config.load -> Dispatcher.load), run hook by hook against a real DNS
server on loopback (tests/helpers/dns_server.py).  No mocked resolver: the
plugins' `nameservers`/`dns_port` point at the loopback server, so no query
leaves the machine.

Sessions are driven through Dispatcher.run with constructed Session objects:
the engine's run_session did not exist yet when this was written; the
end-to-end version (a real `qsmtp serve`) belongs with the engine tests.
"""

from __future__ import annotations

import sys
import time

import pytest

from helpers.dns_server import DnsServer
from helpers.fakes import addr, make_session
from qsmtp import config as qconfig
from qsmtp.plugins.api import Result
from qsmtp.plugins.dispatch import Dispatcher

ZONE = """
$TTL 60
@                         SOA ns.test. host.test. 1 60 60 60 60
; a listed client, with the list's explanation
2.0.0.127.bl.test.        A   127.0.0.2
2.0.0.127.bl.test.        TXT "blocked, see https://bl.test/q?127.0.0.2"
; a listed sender domain
spam.test.rhs.test.       A   127.0.0.2
; a well set-up client: PTR and A agree, domain has an MX
3.0.0.127.in-addr.arpa.   PTR mail.good.test.
mail.good.test.           A   127.0.0.3
good.test.                MX  10 mx.good.test.
spam.test.                MX  10 mx.good.test.
mx.good.test.             A   192.0.2.25
; a client whose PTR lies
4.0.0.127.in-addr.arpa.   PTR liar.test.
liar.test.                A   192.0.2.99
"""


def write_config(tmp_path, dns, *, naughty=False, timeout=2.0):
    resolver = (f'nameservers = ["{dns.host}"]\ndns_port = {dns.port}\n'
                f"dns_timeout = {timeout}\n")
    action = '"naughty"' if naughty else '"deny"'
    text = f"""
[server]
me = "mx.ours.test"
hook_timeout = 10
state_dir = "{tmp_path / 'state'}"
[queue]
path = "{tmp_path / 'maildir'}"
[relay]
clients = []
domains = ["example.test"]
{'[[plugins]]' + chr(10) + 'name = "naughty"' + chr(10) + 'reject = "rcpt"' if naughty else ''}
[[plugins]]
name = "fcrdns"
{resolver}
[[plugins]]
name = "dnsbl"
zones = ["bl.test"]
action = {action}
{resolver}
[[plugins]]
name = "helo"
policy = "rfc"
skip = ["no_reverse_dns"]
{resolver}
[[plugins]]
name = "rhsbl"
zones = [{{ zone = "rhs.test", action = {action} }}]
{resolver}
[[plugins]]
name = "resolvable_fromhost"
{resolver}
"""
    path = tmp_path / "qsmtp.toml"
    path.write_text(text)
    return qconfig.load(str(path))


def converse(dispatcher, config, ip, helo="mail.good.test", sender="a@good.test",
             rcpt="u@example.test"):
    """Run the hooks like the engine would; returns {stage: HookResult}."""
    sess = make_session(config, ip=ip, sender=sender, rcpts=())
    out = {"connect": dispatcher.run("connect", sess)}
    out["ehlo"] = dispatcher.run("ehlo", sess, helo)
    out["mail"] = dispatcher.run("mail", sess, sess.transaction.sender, {})
    out["rcpt"] = dispatcher.run("rcpt", sess, addr(rcpt), {})
    return out, sess


@pytest.fixture
def dns():
    with DnsServer.from_zone_text(ZONE, ".") as server:
        yield server


def test_clean_client_passes_everything(tmp_path, dns):
    config = write_config(tmp_path, dns)
    dispatcher = Dispatcher.load(config)
    out, sess = converse(dispatcher, config, "127.0.0.3")
    assert [r.result for r in out.values()] == [Result.DECLINED] * 3 + [Result.OK]
    assert sess.remote_host == "mail.good.test"  # fcrdns confirmed it
    asked = {q[0] for q in dns.queries}
    assert {"3.0.0.127.in-addr.arpa", "3.0.0.127.bl.test", "good.test"} <= asked


def test_listed_client_refused_at_rcpt_with_the_listing(tmp_path, dns):
    dispatcher = Dispatcher.load(config := write_config(tmp_path, dns))
    out, _ = converse(dispatcher, config, "127.0.0.2", helo="client.good.test")
    assert out["connect"].result is Result.DECLINED
    assert out["rcpt"].result is Result.DENY
    assert out["rcpt"].message == ("5.7.1 Your address 127.0.0.2 is listed in bl.test: "
                                   "blocked, see https://bl.test/q?127.0.0.2")
    out, _ = converse(dispatcher, config, "127.0.0.2", rcpt="postmaster@example.test")
    assert out["rcpt"].result is Result.OK  # postmaster stays reachable


def test_each_check_refuses(tmp_path, dns):
    dispatcher = Dispatcher.load(config := write_config(tmp_path, dns))
    out, _ = converse(dispatcher, config, "127.0.0.3", sender="x@spam.test")
    assert out["mail"].result is Result.DENY and "rhs.test" in out["mail"].message
    out, _ = converse(dispatcher, config, "127.0.0.3", sender="x@nowhere.test")
    assert out["mail"].message == "5.7.1 Sender domain nowhere.test does not resolve"
    out, _ = converse(dispatcher, config, "127.0.0.3", helo="unknown.good.test")
    assert out["ehlo"].result is Result.DENY and "no forward dns" in out["ehlo"].message


def test_naughty_defers_every_refusal(tmp_path, dns):
    dispatcher = Dispatcher.load(config := write_config(tmp_path, dns, naughty=True))
    out, sess = converse(dispatcher, config, "127.0.0.2", sender="x@spam.test")
    assert [out[s].result for s in ("connect", "ehlo", "mail")] == [Result.DECLINED] * 3
    assert out["rcpt"].result is Result.DENY_DISCONNECT
    assert "bl.test" in out["rcpt"].message  # the first flag raised wins
    assert sess.notes["karma"] <= -1


def test_tcp_fallback_on_truncated_udp(tmp_path):
    with DnsServer.from_zone_text(ZONE, ".", truncate_udp=True) as dns:
        dispatcher = Dispatcher.load(config := write_config(tmp_path, dns))
        out, _ = converse(dispatcher, config, "127.0.0.2")
        assert out["rcpt"].result is Result.DENY
        assert {q[2] for q in dns.queries} == {"udp", "tcp"}


def test_unanswered_dns_fails_open_within_the_plugin_timeout(tmp_path):
    silent = ["2.0.0.127.bl.test", "2.0.0.127.in-addr.arpa", "good.test"]
    with DnsServer.from_zone_text(ZONE, ".", drop=silent) as dns:
        dispatcher = Dispatcher.load(config := write_config(tmp_path, dns, timeout=0.5))
        started = time.monotonic()
        out, _ = converse(dispatcher, config, "127.0.0.2", helo="mail.good.test")
        elapsed = time.monotonic() - started
    assert not any(r.failed for r in out.values())  # no hook overran its budget
    assert out["connect"].result is Result.DECLINED
    assert out["mail"].result is Result.DENYSOFT  # sender domain: try again later
    assert elapsed < 5


# -- end to end: a real `qsmtp serve` ----------------------------------------

def test_listed_client_refused_by_a_real_server(tmp_path, dns):
    import smtplib
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_config(tmp_path, dns)  # writes qsmtp.toml; add the listener to it
    path = tmp_path / "qsmtp.toml"
    text = path.read_text().replace(
        "[server]\n", f'[server]\nlisten = ["127.0.0.1:{port}"]\nchildren = 2\n'
        f'idle_children = 1\nruntime_dir = "{tmp_path / "run"}"\n', 1)
    path.write_text(text)
    server = subprocess.Popen([sys.executable, "-m", "qsmtp", "serve", "--config", str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.2", 0),
                          local_hostname="mail.good.test", timeout=15) as client:
            client.ehlo()
            code, _ = client.mail("a@good.test")
            assert code == 250
            code, message = client.rcpt("u@example.test")
            assert code == 550
            assert b"listed in bl.test" in message and b"https://bl.test/" in message
    finally:
        server.terminate()  # only the process this test started
        server.wait(30)
