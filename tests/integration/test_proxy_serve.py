"""PROXY protocol against a real `qsmtp serve`: the header's address is the
client for the per-IP limit, the relay decision, Received:, the logs and
`qsmtpctl status`; anything else is closed without a banner."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers.dns_server import DnsServer
from helpers.server import free_port, read_line, wait_for
from qsmtp.proxy import build_v2

QSMTPCTL = str(Path(sys.executable).with_name("qsmtpctl"))
BALANCER = "127.0.0.2"       # the only trusted peer
PROXY_TOML = f'\n[proxy]\nprotocol = "any"\ntrusted = ["{BALANCER}/32"]\ntimeout = 1\n'


def proxied(port: int, header: bytes, source: str = BALANCER) -> tuple[socket.socket, bytes]:
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(header)
    try:
        return sock, read_line(sock)
    except ConnectionResetError:  # closed with our bytes unread: no banner either
        return sock, b""


def status_peers(srv) -> dict:
    """`qsmtpctl status --json`'s peers (client IP -> sessions)."""
    out = subprocess.run([QSMTPCTL, "status", "--json", "--config", str(srv.config_path)],
                         capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)["peers"]


def v2_from(client: str, port: int) -> bytes:
    return build_v2((client, 40000), ("127.0.0.1", port))


def chat(sock: socket.socket, line: str) -> bytes:
    """Send a line, return the reply's last line (multi-line replies too)."""
    sock.sendall(line.encode() + b"\r\n")
    data = b""
    while not data.endswith(b"\n") or data.rsplit(b"\n", 2)[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]


def test_header_address_is_the_client_everywhere(serve):
    srv = serve(max_from_ip=1, extra_toml=PROXY_TOML)
    sock, banner = proxied(srv.port, v2_from("192.0.2.7", srv.port))
    assert banner.startswith(b"220 ")
    peers = wait_for(lambda: status_peers(srv), what="a busy peer")
    assert peers == {"192.0.2.7": 1}  # qsmtpctl status' view
    # the per-IP limit counts the real client, not the balancer
    second, reply = proxied(srv.port, v2_from("192.0.2.7", srv.port))
    assert reply.startswith(b"421 4.7.0") and b"192.0.2.7" in reply
    other, reply = proxied(srv.port, b"PROXY TCP4 192.0.2.8 127.0.0.1 5000 25\r\n")
    assert reply.startswith(b"220 ")
    # relay: 127.0.0.0/8 may relay, 192.0.2.7 may not
    assert chat(sock, "EHLO client.test").startswith(b"250")
    assert chat(sock, "MAIL FROM:<a@client.test>").startswith(b"250")
    assert chat(sock, "RCPT TO:<x@elsewhere.test>").startswith(b"550 5.7.1")
    assert chat(sock, "RCPT TO:<u@example.test>").startswith(b"250")
    assert chat(sock, "DATA").startswith(b"354")
    assert chat(sock, "Subject: t\r\n\r\nbody\r\n.").startswith(b"250")
    chat(sock, "QUIT")
    for s in (sock, second, other):
        s.close()
    (stored,) = wait_for(lambda: list((srv.maildir / "new").iterdir()), what="mail")
    text = stored.read_text()
    received = text.split("Received: ", 1)[1].split("\n", 1)[0]
    assert received.startswith("from client.test (") and "[192.0.2.7]" in received
    assert BALANCER not in text
    # the session's log line (its HELO name) names the client, not the balancer
    wait_for(lambda: any("192.0.2.7" in line and BALANCER not in line
                         for line in srv.log().splitlines() if "client.test" in line),
             what="the session's log line")


def test_refusals_close_without_banner(serve):
    srv = serve(extra_toml=PROXY_TOML)
    cases = {
        "untrusted": ("127.0.0.1", v2_from("192.0.2.7", srv.port)),
        "no header": (BALANCER, b"EHLO client.test\r\n"),
        "malformed": (BALANCER, b"PROXY TCP4 192.0.2.7 nope 1 25\r\n"),
        "oversized": (BALANCER, b"PROXY TCP4 " + b"1" * 120 + b"\r\n"),
        "timeout": (BALANCER, b"PROXY TCP4 192.0.2."),
    }
    for name, (source, header) in cases.items():
        started = time.monotonic()
        sock, reply = proxied(srv.port, header, source)
        sock.close()
        assert reply == b"", f"{name}: got {reply!r}"
        assert time.monotonic() - started < 3, name
    log = wait_for(lambda: srv.log().count("without a banner") >= 5 and srv.log())
    assert "untrusted peer 127.0.0.1" in log and "time budget" in log
    assert "Traceback" not in log
    # the port is still fine
    sock, banner = proxied(srv.port, v2_from("192.0.2.9", srv.port))
    assert banner.startswith(b"220 ")
    sock.close()


def test_v2_local_health_check_gets_a_session(serve):
    srv = serve(extra_toml=PROXY_TOML)
    sock, banner = proxied(srv.port, build_v2(None, None))
    assert banner.startswith(b"220 ")
    assert wait_for(lambda: status_peers(srv)) == {BALANCER: 1}
    assert chat(sock, "HELO haproxy").startswith(b"250")
    assert chat(sock, "QUIT").startswith(b"221")
    sock.close()


def test_services_limit_the_header_to_some_listeners(serve):
    plain, behind = free_port(), free_port()
    toml = PROXY_TOML + f'services = [":{behind}"]\n'
    srv = serve(listen=[f"127.0.0.1:{plain}", f"127.0.0.1:{behind}"], extra_toml=toml)
    direct = socket.create_connection(("127.0.0.1", plain), timeout=5)
    assert read_line(direct).startswith(b"220 ")
    sock, banner = proxied(behind, v2_from("192.0.2.10", behind))
    assert banner.startswith(b"220 ")
    bare, reply = proxied(behind, b"")
    assert reply == b""
    for s in (direct, sock, bare):
        s.close()
    assert srv.port  # started with both listeners


def test_proxy_section_needs_trusted(serve):
    srv = serve(start=False, extra_toml='\n[proxy]\nprotocol = "v2"\n')
    result = srv.run_once()
    assert result.returncode == 78
    assert "proxy.trusted" in result.stderr + result.stdout


def test_dns_plugins_look_up_the_proxied_client(serve):
    """dnsbl at connect: the proxied 192.0.2.7 is listed and refused, the
    balancer's own address (127.0.0.2) is never looked up."""
    records = {"7.2.0.192.bl.test": {"A": ["127.0.0.2"], "TXT": ["listed"]},
               "2.0.0.127.bl.test": {"A": ["127.0.0.2"]}}
    with DnsServer(records) as dns:
        toml = PROXY_TOML + (f'\n[[plugins]]\nname = "dnsbl"\nzones = ["bl.test"]\n'
                             f'stage = "connect"\nnameservers = ["{dns.host}"]\n'
                             f'dns_port = {dns.port}\n')
        srv = serve(extra_toml=toml)
        listed, reply = proxied(srv.port, v2_from("192.0.2.7", srv.port))
        assert reply.startswith(b"554") and b"192.0.2.7" in reply
        clean, reply = proxied(srv.port, v2_from("192.0.2.8", srv.port))
        assert reply.startswith(b"220 ")
        for s in (listed, clean):
            s.close()
        asked = {name for name, _, _ in dns.queries}
        assert {"7.2.0.192.bl.test", "8.2.0.192.bl.test"} <= asked
        assert not any(name.endswith("0.0.127.bl.test") for name in asked)


def test_ipv6_client_behind_an_ipv4_balancer(serve):
    srv = serve(extra_toml=PROXY_TOML)
    header = build_v2(("2001:db8::7", 40000), ("2001:db8::25", 25))
    sock, banner = proxied(srv.port, header)
    assert banner.startswith(b"220 ")
    assert wait_for(lambda: status_peers(srv)) == {"2001:db8::7": 1}
    assert chat(sock, "QUIT").startswith(b"221")
    sock.close()
