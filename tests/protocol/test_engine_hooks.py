"""Hook results through the real Dispatcher -> the replies table, and the
engine's control interface (stopping, AbortSession), over real sockets."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

import engine_test_plugins
from protocol_harness import Client, Server, write_config
from qsmtp import config as qconfig
from qsmtp.app import App
from qsmtp.smtp.control import AbortSession
from qsmtp.smtp.session import run_session
from qsmtp.smtp.state import ConnectionInfo


def plugin(name: str = "engine_test_plugins:Scripted", **options) -> str:
    lines = [f'name = "{name}"'] + [
        f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}"
        .replace("'", '"') for key, value in options.items()]
    return "\n[[plugins]]\n" + "\n".join(lines) + "\n"


def start(tmp_path, *plugins: str, **overrides) -> tuple[Server, Client]:
    server = Server(write_config(tmp_path, overrides, extra="".join(plugins)))
    return server, Client(server.port)


def talk(client: Client, *lines: str) -> list[bytes]:
    """Send lines one at a time; the first line of each reply."""
    out = []
    for line in lines:
        client.send(line.encode() + b"\r\n")
        out.append(client.reply()[0])
    return out


TXN = ("EHLO client.test", "MAIL FROM:<a@client.test>", "RCPT TO:<u@example.test>")


@pytest.mark.parametrize("result, expect", [("DENY", b"554 5.7.1"),
                                            ("DENYSOFT", b"421 4.7.0"),
                                            ("DENY_DISCONNECT", b"554 5.7.1"),
                                            ("DENYSOFT_DISCONNECT", b"421 4.7.0")])
def test_connect_refusal_closes(tmp_path, result, expect):
    server, client = start(tmp_path, plugin(hook="connect", result=result))
    assert client.reply()[0].startswith(expect)
    assert client.line() is None
    assert server.wait_session().result == "rejected"


def test_plugin_failure_at_connect_is_421_and_flags_summary(tmp_path):
    server, client = start(tmp_path, plugin(hook="connect", fail=True))
    assert client.reply()[0].startswith(b"421 4.3.0")
    assert client.line() is None
    assert server.wait_session().plugin_failed


def test_helo_refused_leaves_no_helo(tmp_path):
    server, client = start(tmp_path, plugin(hook="helo", result="DENY", message="bad helo"))
    client.reply()
    assert talk(client, "HELO bad.test", "MAIL FROM:<a@client.test>") == [
        b"550 5.7.1 bad helo", b"503 5.5.1 Send HELO/EHLO first"]


def test_mail_denysoft_with_own_code(tmp_path):
    server, client = start(tmp_path, plugin(hook="mail", result="DENYSOFT",
                                            message="4.7.0 greylisted, try later"))
    client.reply()
    got = talk(client, "HELO c.test", "MAIL FROM:<a@client.test>", "RCPT TO:<u@example.test>")
    assert got[1:] == [b"450 4.7.0 greylisted, try later", b"503 5.5.1 Need MAIL command first"]


def test_rcpt_plugin_failure_is_451(tmp_path):
    server, client = start(tmp_path, plugin(hook="rcpt", fail=True))
    client.reply()
    got = talk(client, *TXN[:2], TXN[2], "DATA")
    assert got[2].startswith(b"451 4.3.0") and got[3].startswith(b"503 5.5.1")
    client.close()
    assert server.wait_session().plugin_failed


def test_data_hook_refuses_before_354(tmp_path):
    server, client = start(tmp_path, plugin(hook="data", result="DENY"))
    client.reply()
    assert talk(client, *TXN, "DATA")[-1].startswith(b"554 5.7.1")


@pytest.mark.parametrize("hook, expect", [("data_headers_end", b"554 5.7.1 no thanks"),
                                          ("data_post", b"554 5.7.1 no thanks"),
                                          ("queue_pre", b"554 5.7.1 no thanks")])
def test_refusal_after_data_stores_nothing(tmp_path, hook, expect):
    server, client = start(tmp_path, plugin(hook=hook, result="DENY", message="no thanks"))
    client.reply()
    client.send(b"HELO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
    assert [client.reply()[0][:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
    client.send(b"Subject: x\r\n\r\n" + b"body\r\n" * 1000 + b".\r\nNOOP\r\n")
    assert client.reply() == [expect]
    assert client.reply() == [b"250 2.0.0 Ok"]
    assert server.maildir_files(tmp_path) == []


def test_queue_failure_is_451_not_acknowledged(tmp_path):
    server, client = start(tmp_path, plugin(hook="queue_pre", fail=True))
    client.reply()
    client.send(b"HELO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n"
                b"Subject: x\r\n\r\nbody\r\n.\r\n")
    replies = [client.reply()[0] for _ in range(5)]
    assert replies[-1].startswith(b"451 4.3.0")
    assert server.maildir_files(tmp_path) == []


def test_unrecognized_command_hook_can_disconnect(tmp_path):
    server, client = start(tmp_path, plugin(hook="unrecognized_command",
                                            result="DENYSOFT_DISCONNECT", message="bye"))
    client.reply()
    assert talk(client, "FOO") == [b"421 4.7.0 bye"]
    assert client.line() is None


def test_vrfy_and_noop_hooks(tmp_path):
    server, client = start(tmp_path, plugin(hook="vrfy", result="OK", message="2.1.5 <u@x>"),
                           plugin(hook="noop", result="DENY"))
    client.reply()
    assert talk(client, "VRFY u", "NOOP", "QUIT") == [b"250 2.1.5 <u@x>", b"550 5.7.1 Rejected",
                                                      b"221 2.0.0 mx.example.test Bye"]


def test_hook_order_for_a_whole_session(tmp_path):
    engine_test_plugins.CALLS.clear()
    server, client = start(tmp_path, plugin("engine_test_plugins:Recorder"))
    client.reply()
    client.send(b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n"
                b"Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nVRFY x\r\nFOO\r\nQUIT\r\n")
    while client.line() is not None:
        pass
    server.wait_session()
    assert engine_test_plugins.CALLS == [
        "pre_connection", "connect", "ehlo", "mail", "rcpt", "data", "data_headers_end",
        "data_post", "queue_pre", "queue", "queue_post", "reset_transaction", "noop", "vrfy",
        "unrecognized_command", "quit", "disconnect", "post_connection"]


def test_earlytalker_sees_early_talk(tmp_path):
    server = Server(write_config(tmp_path, extra=plugin("earlytalker", wait=0.5,
                                                         action="deny")))
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"EHLO eager.test\r\n")
    data = sock.recv(1000)
    assert data.startswith(b"554 ") or data.startswith(b"550 ")
    sock.close()
    server.wait_session()


def test_pipelined_transaction_gets_one_send(tmp_path):
    sends: list[bytes] = []

    class Counting(socket.socket):
        def send(self, data, *args):  # the Reader's one call per flush
            sends.append(bytes(data))
            return super().send(data, *args)

    def wrap(conn):
        return Counting(conn.family, conn.type, conn.proto, fileno=conn.detach())

    server = Server(write_config(tmp_path), wrap=wrap)
    client = Client(server.port)
    client.reply()
    client.send(b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<u@example.test>\r\n"
                b"RCPT TO:<v@example.test>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    while client.line() is not None:
        pass
    server.wait_session()
    assert len(sends) == 2, sends  # the greeting, then every reply at once
    assert sends[1].count(b"\r\n") == 6 + 4 + 2


class Control:
    def __init__(self):
        self.stopping = False
        self.touched = 0
        self.abort = False

    def touch(self):
        self.touched += 1
        if self.abort:
            raise AbortSession()


def session_pair(tmp_path, control):
    app = App.load(qconfig.load(write_config(tmp_path)))
    left, right = socket.socketpair()
    result = {}

    def serve():
        result["summary"] = run_session(app, left, ConnectionInfo("192.0.2.9", 1, "x", 25),
                                        control)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    right.settimeout(10)
    return right, thread, result


def read_until_eof(sock) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_stopping_while_idle_gives_421(tmp_path):
    control = Control()
    sock, thread, result = session_pair(tmp_path, control)
    assert sock.recv(1000).startswith(b"220 ")
    sock.sendall(b"HELO c.test\r\n")
    assert sock.recv(1000).startswith(b"250 ")
    started = time.monotonic()
    control.stopping = True
    assert read_until_eof(sock).startswith(b"421 4.3.2 mx.example.test Service shutting down")
    assert time.monotonic() - started < 3
    thread.join(5)
    assert control.touched >= 1


def test_abort_session_gives_421(tmp_path):
    control = Control()
    sock, thread, result = session_pair(tmp_path, control)
    sock.recv(1000)
    control.abort = True
    sock.sendall(b"NOOP\r\n")
    assert read_until_eof(sock).startswith(b"421 4.3.2")
    thread.join(5)
    assert result["summary"].result == "aborted"


def test_stopping_lets_a_transaction_in_flight_finish(tmp_path):
    control = Control()
    sock, thread, result = session_pair(tmp_path, control)
    sock.recv(1000)
    sock.sendall(b"HELO c.test\r\nMAIL FROM:<a@c.test>\r\n")
    time.sleep(0.2)
    control.stopping = True
    time.sleep(1.5)  # longer than the idle poll: still in the transaction
    sock.sendall(b"RCPT TO:<u@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
    replies = read_until_eof(sock)
    assert b"250 2.0.0 Ok: queued" in replies
    assert replies.endswith(b"421 4.3.2 mx.example.test Service shutting down\r\n")
    thread.join(5)
    assert result["summary"].messages == 1


def test_auth_plain_through_the_auth_hook(tmp_path):
    from test_starttls import client_context
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server, client = start(tmp_path, plugin(hook="auth", result="OK"),
                           **{"tls.cert": f'"{cert}"', "tls.key": f'"{key}"'})
    client.reply()
    client.send(b"EHLO c.test\r\n")
    assert b"AUTH" not in b"\n".join(client.reply())  # not offered before TLS
    assert talk(client, "AUTH PLAIN AGJvYgBzZWNyZXQ=")[0].startswith(b"538 5.7.11")
    assert talk(client, "STARTTLS")[0].startswith(b"220 ")
    client.sock = client_context().wrap_socket(client.sock)
    client.send(b"EHLO c.test\r\n")
    assert client.reply()[-1] == b"250 AUTH PLAIN LOGIN"
    assert talk(client, "AUTH CRAM-MD5")[0].startswith(b"504 5.5.4")
    client.send(b"AUTH PLAIN\r\n")
    assert client.line() == b"334 \r\n"
    client.send(b"AGJvYgBzZWNyZXQ=\r\n")
    assert client.reply() == [b"235 2.7.0 Authentication successful"]
    assert talk(client, "AUTH PLAIN AGJvYgBzZWNyZXQ=")[0].startswith(b"503 5.5.1")
    client.close()
    server.wait_session()
