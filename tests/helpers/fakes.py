"""Small builders shared by the plugin tests (units only).

`message_body` is a real MessageBody fed the way the engine feeds it;
`make_session` builds a Session with one transaction holding one.
"""

from __future__ import annotations

from qsmtp.smtp.address import Address
from qsmtp.smtp.message import SPOOL_THRESHOLD, MessageBody
from qsmtp.smtp.state import ConnectionInfo, Session


def message_body(message: bytes, piece: int = 7,
                 threshold: int = SPOOL_THRESHOLD) -> MessageBody:
    """A MessageBody written `piece` bytes at a time (odd sizes on purpose:
    below the spool threshold the body keeps those pieces as its chunks),
    on disk past `threshold` bytes."""
    body = MessageBody(spool_threshold=threshold)
    for start in range(0, len(message), piece):
        body.write(message[start:start + piece])
    body.finish()
    return body


def addr(text: str) -> Address:
    local, _, domain = text.rpartition("@")
    return Address(local=local or text, domain=domain if local else None, raw=f"<{text}>")


def make_session(config, message: bytes = b"Subject: hi\n\nbody\n", sender="s@a.test",
                 rcpts=("u@example.test",), ip="192.0.2.7", **attrs) -> Session:
    sess = Session(conn=ConnectionInfo(ip, 40000, "127.0.0.1", 25), config=config)
    sess.helo_host = "client.test"
    sess.esmtp = True
    for key, value in attrs.items():
        setattr(sess, key, value)
    txn = sess.new_transaction()
    txn.sender = addr(sender) if sender else Address(local="", domain=None, raw="<>")
    txn.recipients = [addr(r) for r in rcpts]
    txn.body = message_body(message)
    return sess


def session_with_spooled_body(config, message: bytes, threshold: int = 1 << 20) -> Session:
    """A session whose message is fed in 64 KiB pieces as the engine does,
    on disk past `threshold` bytes."""
    sess = make_session(config)
    sess.transaction.body = message_body(message, 1 << 16, threshold)
    return sess
