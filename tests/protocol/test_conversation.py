"""The Conversation's single sources of truth, over real sockets: the
summary comes from the last transaction, a budget's 421 replaces the reply
(one refusal line in the log, for the reply sent), and a stop always leaves
through the reader (no poll wait when the worker stops between commands)."""

from __future__ import annotations

import logging
import time

from protocol_harness import Client, Server, write_config
from test_engine_hooks import Control, read_until_eof, session_pair


def test_summary_is_the_last_accepted_transaction(tmp_path):
    refuse_b = '\n[[plugins]]\nname = "engine_test_plugins:RefuseSender"\nsender = "b@c.test"\n'
    server = Server(write_config(tmp_path, extra=refuse_b))
    client = Client(server.port)
    client.reply()
    message = b"Subject: x\r\n\r\nhi\r\n"
    for line in (b"EHLO c.test", b"MAIL FROM:<a@c.test>", b"RCPT TO:<u@example.test>",
                 b"RCPT TO:<v@example.test>", b"DATA"):
        client.send(line + b"\r\n")
        client.reply()
    client.send(message + b".\r\n")
    assert client.reply()[0].startswith(b"250 2.0.0 Ok: queued as ")
    # A MAIL a plugin refuses does not replace the last transaction.
    client.send(b"MAIL FROM:<b@c.test>\r\n")
    assert client.reply()[0].startswith(b"550 5.7.1")
    client.send(b"QUIT\r\n")
    client.reply()
    summary = server.wait_session()
    assert (summary.sender, summary.recipients, summary.size) == ("a@c.test", 2, len(message))
    assert (summary.result, summary.messages, summary.helo) == ("accepted", 1, "c.test")
    assert summary.queue_id and summary.session_id and summary.peer == "127.0.0.1"


def test_a_transaction_without_data_is_the_last_one(tmp_path):
    server = Server(write_config(tmp_path))
    client = Client(server.port)
    client.reply()
    for line in (b"EHLO c.test", b"MAIL FROM:<a@c.test>", b"RCPT TO:<u@example.test>",
                 b"RSET", b"MAIL FROM:<z@c.test>", b"QUIT"):
        client.send(line + b"\r\n")
        client.reply()
    summary = server.wait_session()
    assert (summary.sender, summary.recipients, summary.size) == ("z@c.test", 0, 0)
    assert summary.result == "closed"


def test_budget_421_is_the_one_logged_refusal(tmp_path, caplog):
    server = Server(write_config(tmp_path))  # max_unrecognized = 3
    client = Client(server.port)
    client.reply()
    with caplog.at_level(logging.INFO, logger="qsmtp.session"):
        client.send(b"FOO\r\nFOO\r\nFOO\r\nFOO\r\n")
        replies = read_until_eof(client.sock)
        server.wait_session()
    assert replies.count(b"500 5.5.2") == 3
    assert replies.endswith(b"421 4.7.0 mx.example.test Too many unrecognized commands, "
                            b"closing\r\n")
    refusals = [r.getMessage() for r in caplog.records if ": reject: " in r.getMessage()]
    assert len(refusals) == 4, refusals
    assert "421 4.7.0" in refusals[-1] and "by=qsmtp" in refusals[-1]


class StopOnInput(Control):
    """The worker starts stopping as soon as client bytes arrive."""

    def touch(self):
        self.stopping = True
        super().touch()


def test_stop_between_buffered_commands_needs_no_poll(tmp_path):
    """Stopping begins while pipelined commands are read: they are answered,
    then 421 at once (the reader checks before blocking, not a poll later)."""
    control = StopOnInput()
    sock, thread, result = session_pair(tmp_path, control)
    assert sock.recv(1000).startswith(b"220 ")
    started = time.monotonic()
    sock.sendall(b"NOOP\r\nNOOP\r\n")
    replies = read_until_eof(sock)
    assert replies == (b"250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"
                       b"421 4.3.2 mx.example.test Service shutting down\r\n")
    assert time.monotonic() - started < 0.9  # below the 1 s idle poll
    thread.join(5)
    assert result["summary"].result == "closed"
