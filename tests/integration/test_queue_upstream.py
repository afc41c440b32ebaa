"""queue/smtp and queue/lmtp against real Postfix pieces (a private Postfix
instance, smtp-sink) and, for faults Postfix can't be asked to make, a tiny
scripted raw-socket server.

The hooks are called directly with a constructed Session/Transaction: the
engine's run_session did not exist yet when this was written, so the
end-to-end (client -> qsmtp -> Postfix) version lives with the engine tests.
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time

import pytest

from helpers.fakes import make_session
from helpers.postfix import free_port, private_postfix, smtp_sink  # noqa: F401
from qsmtp import config as qconfig
from qsmtp.plugins.api import PluginError, Result
from qsmtp.plugins.builtin.queue_smtp import QueueSmtp

MESSAGE = (b"From: a@a.test\nTo: u@example.test\nSubject: upstream\n\n"
           b"first line\n.a line starting with a dot\n..two dots\n.\nlast\n")
RECEIVED = "Received: from client.test\n\tby mx.example.test; date"


def plugin(tmp_path, upstream, backend="smtp", timeout=5):
    path = tmp_path / "q.toml"
    path.write_text(textwrap.dedent(f"""
        [server]
        me = "mx.example.test"
        [queue]
        backend = "{backend}"
        upstream = "{upstream}"
        upstream_timeout = {timeout}
    """))
    cfg = qconfig.load(str(path))
    return QueueSmtp(cfg, f"queue/{backend}", {}), cfg


def session_for(cfg, rcpts=("u@example.test",), message=MESSAGE):
    sess = make_session(cfg, message, rcpts=rcpts)
    sess.transaction.added_headers.append(RECEIVED)
    return sess


# -- against a private Postfix ---------------------------------------------
def test_postfix_accepts_and_delivers_the_exact_message(tmp_path, private_postfix):
    pf = private_postfix(domains=["example.test"])
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{pf.port}")
    result, message = queue.hook_queue(session_for(cfg))
    assert result is Result.OK, message
    assert message.startswith("2.0.0 Ok: queued as ")
    (delivered,) = pf.wait_for_messages(1)
    # Postfix puts its own Return-Path/Delivered-To/Received on top; below
    # them is exactly what we sent (its Maildir uses LF, like ours).
    assert delivered.endswith(RECEIVED.encode() + b"\n" + MESSAGE), delivered


def test_postfix_5xx_passes_its_text(tmp_path, private_postfix):
    pf = private_postfix(domains=["example.test"])
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{pf.port}")
    result, message = queue.hook_queue(session_for(cfg, rcpts=("u@foreign.test",)))
    assert result is Result.DENY
    assert message.startswith("5.7.1 ") and "Relay access denied" in message
    assert pf.wait_for_messages(1, timeout=1) == []


def test_postfix_mixed_recipients_refuse_whole_message(tmp_path, private_postfix):
    pf = private_postfix(domains=["example.test"])
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{pf.port}")
    sess = session_for(cfg, rcpts=("u@example.test", "u@foreign.test"))
    assert queue.hook_queue(sess)[0] is Result.DENY
    assert pf.wait_for_messages(1, timeout=1) == []  # nothing half-delivered


# -- against smtp-sink ------------------------------------------------------
def test_smtp_sink_receives_the_message(tmp_path, smtp_sink):
    sink = smtp_sink()
    queue, cfg = plugin(tmp_path, sink.upstream)
    assert queue.hook_queue(session_for(cfg))[0] is Result.OK
    (dump,) = sink.wait_for_messages(1)
    # smtp-sink un-stuffs and stores LF lines, then appends an empty line.
    assert dump.endswith(RECEIVED.encode() + b"\n" + MESSAGE + b"\n")


def test_smtp_sink_4xx_at_rcpt_is_denysoft(tmp_path, smtp_sink):
    sink = smtp_sink(extra_args=("-r", "RCPT"))
    queue, cfg = plugin(tmp_path, sink.upstream)
    result, message = queue.hook_queue(session_for(cfg))
    assert result is Result.DENYSOFT and message.startswith("4.")


@pytest.mark.parametrize("unix", [False, True])
def test_lmtp_to_smtp_sink(tmp_path, smtp_sink, unix):
    sink = smtp_sink(lmtp=True, unix=unix)
    queue, cfg = plugin(tmp_path, sink.upstream, backend="lmtp")
    sess = session_for(cfg, rcpts=("u@example.test", "v@example.test"))
    result, message = queue.hook_queue(sess)
    assert result is Result.OK, message
    (dump,) = sink.wait_for_messages(1)
    assert b"X-Client-Proto: LMTP" in dump
    assert b"X-Rcpt-Args: <u@example.test>\nX-Rcpt-Args: <v@example.test>" in dump


# -- faults -----------------------------------------------------------------
def test_upstream_down_is_451(tmp_path):
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{free_port()}")
    result, message = queue.hook_queue(session_for(cfg))
    assert result is Result.DENYSOFT and message.startswith("4.3.0")


class Scripted:
    """One-connection raw SMTP/LMTP server.  `replies` maps a command verb
    (or "." for end of data) to the reply lines; "CLOSE" closes the socket
    at that point, "HANG" stops answering, "CLOSE-IN-DATA" closes after the
    first DATA bytes arrive."""

    def __init__(self, replies: dict[str, list[bytes] | str], greeting=b"220 fake\r\n"):
        self.replies, self.greeting = replies, greeting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.data = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            self.converse(conn)

    def converse(self, conn: socket.socket) -> None:
        if self.greeting == "HANG":
            time.sleep(5)
            return
        conn.sendall(self.greeting)
        reader = conn.makefile("rb")
        in_data = False
        for line in reader:
            if in_data:
                if self.replies.get("DATA-BYTES") == "CLOSE-IN-DATA":
                    return
                if line == b".\r\n":
                    in_data = False
                    if not self.answer(conn, "."):
                        return
                else:
                    self.data += line
                continue
            verb = line.split()[0].decode().upper() if line.strip() else ""
            if not self.answer(conn, verb):
                return
            in_data = verb == "DATA"

    def answer(self, conn: socket.socket, key: str) -> bool:
        reply = self.replies.get(key, [b"250 ok\r\n"])
        if reply == "CLOSE":
            return False
        if reply == "HANG":
            time.sleep(5)
            return False
        conn.sendall(b"".join(reply))
        return True


DEFAULTS = {"EHLO": [b"250-fake\r\n", b"250 8BITMIME\r\n"],
            "LHLO": [b"250-fake\r\n", b"250 8BITMIME\r\n"],
            "DATA": [b"354 go\r\n"], "QUIT": [b"221 bye\r\n"]}


def scripted(**replies) -> Scripted:
    table = dict(DEFAULTS)
    table.update({k.replace("END", "."): v for k, v in replies.items()})
    return Scripted(table)


def test_wire_bytes_are_crlf_and_dot_stuffed(tmp_path):
    server = scripted()
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{server.port}")
    assert queue.hook_queue(session_for(cfg))[0] is Result.OK
    expected = (RECEIVED.encode() + b"\n" + MESSAGE.replace(b"\n.", b"\n..")
                ).replace(b"\n", b"\r\n")
    assert server.data == expected


def test_message_without_final_newline_gets_crlf(tmp_path):
    server = scripted()
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{server.port}")
    sess = session_for(cfg, message=b"Subject: x\n\nno newline at end")
    assert queue.hook_queue(sess)[0] is Result.OK
    assert server.data.endswith(b"\r\nno newline at end\r\n")


@pytest.mark.parametrize("where", ["DATA-BYTES", "END", "MAIL"])
def test_upstream_closing_mid_transfer_is_451(tmp_path, where):
    big = b"Subject: big\n\n" + b"x" * 200 + b"\n" * 2000
    value = "CLOSE-IN-DATA" if where == "DATA-BYTES" else "CLOSE"
    server = scripted(**{where: value})
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{server.port}")
    result, message = queue.hook_queue(session_for(cfg, message=big))
    assert result is Result.DENYSOFT and message.startswith("4.3.0")


def test_upstream_silent_times_out_as_451(tmp_path):
    server = scripted(END="HANG")
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{server.port}", timeout=1)
    started = time.monotonic()
    result, _ = queue.hook_queue(session_for(cfg))
    assert result is Result.DENYSOFT
    assert time.monotonic() - started < 3


def test_upstream_5xx_after_data_passes_text(tmp_path):
    server = scripted(END=[b"554 5.7.1 spam, go away\r\n"])
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{server.port}")
    assert queue.hook_queue(session_for(cfg)) == (Result.DENY, "5.7.1 spam, go away")


def test_upstream_text_without_status_code_gets_one(tmp_path):
    server = scripted(MAIL=[b"451 try later\r\n"])
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{server.port}")
    assert queue.hook_queue(session_for(cfg)) == (Result.DENYSOFT, "4.3.0 try later")


@pytest.mark.parametrize("replies, expected", [
    ([b"250 2.0.0 ok\r\n", b"250 2.0.0 ok\r\n"], Result.OK),
    ([b"250 2.0.0 ok\r\n", b"452 4.2.2 mailbox full\r\n"], Result.DENYSOFT),
    ([b"550 5.1.1 no such user\r\n", b"250 2.0.0 ok\r\n"], Result.DENY),
    ([b"550 5.1.1 no such user\r\n", b"451 4.3.0 later\r\n"], Result.DENYSOFT),
])
def test_lmtp_per_recipient_replies(tmp_path, replies, expected):
    server = scripted(END=replies)
    queue, cfg = plugin(tmp_path, f"127.0.0.1:{server.port}", backend="lmtp")
    sess = session_for(cfg, rcpts=("u@example.test", "v@example.test"))
    result, message = queue.hook_queue(sess)
    assert result is expected, message
    if expected is Result.DENY:
        assert message == "5.1.1 no such user"


@pytest.mark.parametrize("upstream, backend", [
    ("unix:/run/x.sock", "smtp"), ("nohost", "smtp"), ("host:99999", "lmtp"),
    ("unix:relative", "lmtp")])
def test_bad_upstream_is_a_load_error(tmp_path, upstream, backend):
    with pytest.raises(PluginError):
        plugin(tmp_path, upstream, backend=backend)
