"""Small stand-ins shared by the plugin tests (units only).

`FakeBody` has the MessageBody surface the plugins use (header_block,
iter_chunks, size); `make_session` builds a Session with one transaction.
"""

from __future__ import annotations

from qsmtp.smtp.address import Address
from qsmtp.smtp.state import ConnectionInfo, Session


class FakeBody:
    def __init__(self, message: bytes, chunk: int = 7):
        head, sep, rest = message.partition(b"\n\n")
        self.header_block = head + sep
        self.rest = rest
        self.chunk = chunk

    @property
    def size(self) -> int:
        return len(self.header_block) + len(self.rest)

    def iter_chunks(self):
        yield self.header_block
        for i in range(0, len(self.rest), self.chunk):  # odd sizes on purpose
            yield self.rest[i:i + self.chunk]


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
    txn.body = FakeBody(message)
    return sess


def session_with_spooled_body(config, message: bytes, threshold: int = 1 << 20) -> Session:
    """A session whose transaction holds a real MessageBody, fed in 64 KiB
    pieces as the engine does, on disk past `threshold` bytes."""
    from qsmtp.smtp.message import MessageBody

    sess = make_session(config)
    body = MessageBody(spool_threshold=threshold)
    for start in range(0, len(message), 1 << 16):
        body.write(message[start:start + (1 << 16)])
    body.finish()
    sess.transaction.body = body
    return sess
