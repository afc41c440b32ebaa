"""Shared state across hosts: three real `qsmtp serve` instances, each on its
own loopback address with its own runtime dir and registry, sharing one
private redis-server (`[state] backend = "redis"`).  Clients connect to the
hosts directly (not through the `cluster` fixture's HAProxy: (c) and (e)
must pick the host a try lands on), binding their own source address, so
each test has a client IP of its own.

(c) a triplet greylisted on host A passes on host B after the delay;
(d) one client IP opening 3 x N connections spread over the hosts gets
    exactly the cluster limit (concurrency, then connection rate);
(e) AUTH failures are counted across hosts;
(f) Redis stopped mid-load: mail keeps flowing (greylisting, karma, limit
    fail open), AUTH gets 454 (fails closed), nothing is lost, and the
    shared limit is back once Redis is.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import pathlib
import signal
import smtplib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.redis import RedisServer
from helpers.server import ServerPool, connect, free_port, wait_for
from qsmtp import config as qconfig
from qsmtp.state.clientlimits import cluster_view

QSMTPCTL = str(pathlib.Path(sys.executable).with_name("qsmtpctl"))
HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
PASSWORD = "correct horse battery"
N = 4  # the limits in (d)

pytestmark = pytest.mark.timeout(110)


class StateCluster:
    def __init__(self, tmp_path, redis: RedisServer, plugins: str, auth: str = ""):
        self.redis, self.pool = redis, ServerPool(tmp_path, gone_within=5)
        self.hosts = []
        for i, address in enumerate(HOSTS):
            port = free_port(address)
            extra = (f'[relay]\nclients = ["127.0.0.1/32"]\ndomains = ["example.test"]\n'
                     f'[state]\nbackend = "redis"\nurl = "{redis.url}"\n'
                     f"[auth]\nfailure_delay = 0\n{auth}\n{plugins}")
            srv = self.pool.make(name=f"host{i}", start=False, listen=[f"{address}:{port}"],
                                 extra_toml=extra, children=8, idle_children=3,
                                 max_from_ip=20, state_dir=str(tmp_path / f"state{i}"))
            srv.host, srv.port = address, port
            self.hosts.append(srv)
        for srv in self.hosts:
            srv.start()

    def view(self, ip: str) -> dict:
        config = qconfig.load(str(self.hosts[0].config_path))
        return cluster_view(config, [ip], time.time())[ip]

    def messages(self) -> list[bytes]:
        found = []
        for srv in self.hosts:
            for path in sorted((srv.maildir / "new").glob("*")):
                found.append(path.read_bytes())
        return found

    def close(self) -> None:
        problems = self.pool.close()
        assert not problems, "\n".join(problems)


@pytest.fixture
def redis(tmp_path):
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def state_cluster(tmp_path, redis):
    made = []

    def make(plugins: str, auth: str = "") -> StateCluster:
        made.append(StateCluster(tmp_path, redis, plugins, auth))
        return made[-1]
    yield make
    for c in made:
        c.close()


def smtp(srv, source: str) -> smtplib.SMTP:
    client = smtplib.SMTP(srv.host, srv.port, timeout=20, source_address=(source, 0))
    client.ehlo("client.test")
    return client


def rcpt_reply(srv, source: str, sender="s@client.test", to="u@example.test"):
    with smtp(srv, source) as client:
        client.mail(sender)
        return client.rcpt(to)


# -- (c) -------------------------------------------------------------------------
def test_c_greylisted_on_a_passes_on_b(state_cluster):
    c = state_cluster('[[plugins]]\nname = "greylisting"\nblack_timeout = 2\n'
                'grey_timeout = 60\nwhite_timeout = 600\n')
    a, b, third = c.hosts
    first = rcpt_reply(a, "127.0.0.71")
    assert first[0] == 450 and first[1].startswith(b"4.7.1")
    assert rcpt_reply(third, "127.0.0.71")[0] == 450  # still within black_timeout
    time.sleep(2.2)
    assert rcpt_reply(b, "127.0.0.71")[0] == 250  # B never saw this triplet itself
    assert rcpt_reply(third, "127.0.0.71")[0] == 250
    assert rcpt_reply(third, "127.0.0.72")[0] == 450  # another client: new triplet


# -- (d) -------------------------------------------------------------------------
def _open(srv, source: str):
    sock, line = connect(srv.port, srv.host, source=source, timeout=20)
    return sock, line


def test_d_one_client_gets_exactly_the_cluster_limit(state_cluster):
    c = state_cluster(f'[[plugins]]\nname = "limit"\nconcurrency = {N}\n'
                f'connection_rate = "{2 * N}/300s"\n')
    ip = "127.0.0.73"
    spread = [srv for srv, _ in zip(itertools.cycle(c.hosts), range(3 * N))]
    # 3 x N at once, all held open: exactly N sessions get the greeting.
    with ThreadPoolExecutor(3 * N) as pool:
        opened = list(pool.map(lambda srv: _open(srv, ip), spread))
    greeted = [line for _, line in opened if line.startswith(b"220")]
    refused = [line for _, line in opened if line.startswith(b"421 4.7.0")]
    assert (len(greeted), len(refused)) == (N, 2 * N), [line for _, line in opened]
    assert {srv.host for srv, (_, line) in zip(spread, opened, strict=True)
            if line.startswith(b"421")} != {spread[0].host}  # refusals on several hosts
    assert c.view(ip)["sessions"] == N
    _status_shows_the_cluster(c, ip)
    for sock, _ in opened:
        sock.close()
    wait_for(lambda: c.view(ip)["sessions"] == 0, 10, what="sessions given back")
    # One after the other, 3 x N more: the rate (2N per 300 s) lets exactly N
    # more in - the N greeted above already count.
    lines = []
    for srv in spread:
        sock, line = _open(srv, ip)
        lines.append(line)
        sock.sendall(b"QUIT\r\n")
        sock.close()
    assert sum(line.startswith(b"220") for line in lines) == N, lines
    assert sum(line.startswith(b"421 4.7.0") for line in lines) == 2 * N
    assert c.view(ip)["connections"] == 2 * N


def test_d_a_dead_workers_place_expires(state_cluster):
    """kill -9 of the worker holding a client's only place: the place is
    not given back, so it counts until its lease (2 s) runs out."""
    c = state_cluster('[[plugins]]\nname = "limit"\nconcurrency = 1\nlease = 2\n')
    ip = "127.0.0.78"
    sock, line = _open(c.hosts[0], ip)
    assert line.startswith(b"220")
    pid = next(w["pid"] for w in c.hosts[0].snapshot()["workers"] if w["peer"] == ip)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    sock.close()

    def greeted_on_b():
        other, line = _open(c.hosts[1], ip)
        other.close()
        return line.startswith(b"220") or time.sleep(0.2)
    assert not greeted_on_b()  # the dead session still counts, on every host
    wait_for(greeted_on_b, 10, what="the lease to run out")
    freed = time.monotonic() - killed
    print(f"\n(d) a dead worker's place freed {freed:.2f} s after kill -9 (lease 2 s)")
    assert 1.0 < freed < 2 + 1.5


def test_d_through_haproxy(cluster, redis):
    """The same limit behind the shipped HAProxy (send-proxy-v2, leastconn):
    the client address the hosts count is the one from the PROXY header."""
    c = cluster(extra_toml=f'[state]\nbackend = "redis"\nurl = "{redis.url}"\n'
                           f'[[plugins]]\nname = "limit"\nconcurrency = {N}\n')
    ip, before = "127.0.0.120", c.forwarded()
    with ThreadPoolExecutor(3 * N) as pool:
        opened = list(pool.map(lambda _: connect(c.frontend[1], c.frontend[0], source=ip,
                                                 timeout=20), range(3 * N)))
    lines = [line for _, line in opened]
    assert sum(line.startswith(b"220") for line in lines) == N, lines
    assert sum(line.startswith(b"421 4.7.0") for line in lines) == 2 * N, lines
    config = qconfig.load(str(c.hosts[0].config_path))
    assert cluster_view(config, [ip], time.time())[ip]["sessions"] == N
    spread = [after - before.get(name, 0) for name, after in c.forwarded().items()]
    assert sum(n > 0 for n in spread) >= 2, spread  # the balancer used several hosts
    for sock, _ in opened:
        sock.close()


def _status_shows_the_cluster(c, ip: str) -> None:
    """`qsmtpctl status` on each host: its own sessions from the client next
    to the cluster's count."""
    here = []
    for srv in c.hosts:
        res = subprocess.run([QSMTPCTL, "--config", str(srv.config_path), "status", "--json"],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        view = doc["cluster"]["peers"].get(ip, {"here": 0, "sessions": N})
        assert view["sessions"] == N and view["here"] == doc["peers"].get(ip, 0)
        here.append(view["here"])
    assert sum(here) == N
    busy = max(range(len(here)), key=here.__getitem__)
    text = subprocess.run([QSMTPCTL, "--config", str(c.hosts[busy].config_path), "status"],
                          capture_output=True, text=True, timeout=30).stdout
    assert f"{ip}: {here[busy]} here, {N} on all hosts" in text, text


# -- (e) -------------------------------------------------------------------------
def _auth_cluster(state_cluster, tmp_path, plugins: str = "") -> StateCluster:
    users = tmp_path / "users"
    res = subprocess.run([QSMTPCTL, "user", "add", "alice", "--file", str(users),
                          "--password-stdin", "--cost", "12"], input=PASSWORD + "\n",
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return state_cluster(f'[[plugins]]\nname = "auth/file"\npath = "{users}"\n{plugins}',
                   auth='plaintext_services = ["smtp"]\nmax_failures = 3\n'
                        'failure_window = 300')


def auth(srv, source: str, password: str) -> tuple[int, bytes]:
    plain = base64.b64encode(f"\0alice\0{password}".encode()).decode()
    with smtp(srv, source) as client:
        return client.docmd("AUTH", f"PLAIN {plain}")


def test_e_auth_failures_counted_across_hosts(state_cluster, tmp_path):
    c = _auth_cluster(state_cluster, tmp_path)
    ip = "127.0.0.74"
    assert [auth(srv, ip, "wrong")[0] for srv in c.hosts] == [535, 535, 535]
    for srv in c.hosts:  # three failures, one per host: the cluster's limit is reached
        code, text = auth(srv, ip, PASSWORD)
        assert (code, text[:5]) == (421, b"4.7.0"), (srv.host, code, text)
    assert auth(c.hosts[1], "127.0.0.75", PASSWORD)[0] == 235  # other clients unaffected


# -- (f) -------------------------------------------------------------------------
LOAD_CLIENTS, LOAD_MESSAGES = ("127.0.0.81", "127.0.0.82", "127.0.0.83"), 12


def _send_all(hosts, source: str, log: list, stop_after: float, pace: float = 0.0) -> None:
    """Send LOAD_MESSAGES, `pace` seconds apart, each retried on a 4xx (as an
    MTA would) until a 250; every answer is logged (source, n, code)."""
    for n in range(LOAD_MESSAGES):
        time.sleep(pace)
        srv = hosts[n % len(hosts)]
        body = f"Subject: load {source} {n}\r\nMessage-ID: <{source}.{n}@client.test>\r\n\r\nx\r\n"
        deadline = time.monotonic() + stop_after
        while True:
            try:
                with smtp(srv, source) as client:
                    client.sendmail("s@client.test", ["u@example.test"], body)
                log.append((source, n, 250))
                break
            except smtplib.SMTPResponseException as exc:
                log.append((source, n, exc.smtp_code))
                assert 400 <= exc.smtp_code < 500, (exc.smtp_code, exc.smtp_error)
            except smtplib.SMTPRecipientsRefused as exc:
                code = next(iter(exc.recipients.values()))[0]
                log.append((source, n, code))
                assert 400 <= code < 500, exc.recipients
            assert time.monotonic() < deadline, f"{source} message {n} never accepted"
            time.sleep(0.5)
            srv = hosts[(n + 1) % len(hosts)]  # the retry may land elsewhere


def test_f_redis_stopped_mid_load(state_cluster, tmp_path, redis):
    c = _auth_cluster(state_cluster, tmp_path,
                      '[[plugins]]\nname = "limit"\nconcurrency = 5\n'
                      '[[plugins]]\nname = "karma"\n'
                      '[[plugins]]\nname = "greylisting"\nblack_timeout = 1\n'
                      'grey_timeout = 60\nsender = false\nrecipient = false\n')
    log: list = []
    # Paced, so the load outlasts the outage's start on a fast machine too
    # (unpaced, all 36 messages could be in before Redis stops).
    threads = [threading.Thread(target=_send_all, args=(c.hosts, ip, log, 30, 0.25))
               for ip in LOAD_CLIENTS]
    for thread in threads:
        thread.start()
    wait_for(lambda: sum(code == 250 for *_, code in log) >= 3, 30, what="load under way")
    redis.stop()  # mid-load
    outage_start = len(log)
    code, text = auth(c.hosts[0], "127.0.0.76", PASSWORD)
    assert (code, text[:5]) == (454, b"4.7.0")  # AUTH fails closed
    wait_for(lambda: sum(code == 250 for *_, code in log[outage_start:]) >= 6, 30,
             what="mail accepted while Redis is down")
    redis.start()  # same port: the workers reconnect by themselves
    for thread in threads:
        thread.join(60)
    accepted = {(src, n) for src, n, code in log if code == 250}
    assert accepted == {(ip, n) for ip in LOAD_CLIENTS for n in range(LOAD_MESSAGES)}
    stored = c.messages()
    ids = sorted(m.split(b"Message-ID: <", 1)[1].split(b">", 1)[0] for m in stored)
    assert ids == sorted(f"{ip}.{n}@client.test".encode() for ip, n in accepted)  # no loss, no dup
    during = [code for *_, code in log[outage_start:]]
    assert all(code == 250 or 400 <= code < 500 for code in during)
    print(f"\n(f) {len(accepted)} messages accepted, {len(stored)} stored; during the "
          f"outage: {during.count(250)} accepted, {len(during) - during.count(250)} 4xx "
          f"(retried); 4xx in the whole run: {sum(code != 250 for *_, code in log)}")
    logs = "".join(srv.log() for srv in c.hosts)
    assert "store unavailable" in logs and "Traceback" not in logs
    assert auth(c.hosts[2], "127.0.0.76", PASSWORD)[0] == 235  # back to normal
    held = [_open(srv, "127.0.0.77") for srv in c.hosts * 2]
    assert sum(line.startswith(b"220") for _, line in held) == 5  # the shared limit again
    for sock, _ in held:
        sock.close()
