"""The multi-step verbs: DATA (message transfer through the DATA-stage
hooks to the queue), STARTTLS (the socket changes under the session). AUTH is in auth.py."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from qsmtp import log as qlog
from qsmtp.smtp.conversation import Conversation
from qsmtp.smtp.message import MessageBody
from qsmtp.smtp.reader import DataStatus
from qsmtp.smtp.replies import Reply
from qsmtp.smtp.state import Transaction

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("qsmtp.session")

GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
BARE_IN_DATA = Reply(554, "5.6.0", "Message contains bare CR or LF; not accepted")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
NO_QUEUE = Reply(451, "4.3.0", "No queue accepted the message, try again later")
NO_SPOOL = Reply(451, "4.3.0", "Local error in processing, try again later")
# The id the client is told ("queued as <id>", whichever queue plugin said it).
_QUEUED_AS = re.compile(r"queued as (\S+)")


# -- DATA ----------------------------------------------------------------------
def receive(conv: Conversation, txn: Transaction) -> None:
    reply = conv.hook_reply("data", ok=GO_AHEAD)
    if not reply.positive:
        return conv.refuse(reply)
    conv.reply(GO_AHEAD)
    body = txn.body = MessageBody()
    early: list[Reply] = []  # a refusal at data_headers_end

    def sink(data: bytes) -> None:
        if not early and body.write(data):
            _headers_end(conv, early)

    status = conv.read_message(sink)
    if not (status.bare_line_end or status.too_big or early) and body.finish():
        _headers_end(conv, early)
    txn.wire_size = status.wire_size
    verdict = _verdict(conv, txn, status, early)
    if verdict.positive:
        _accepted(conv, txn, verdict, body.size)
        conv.reply(verdict)
    else:
        conv.refuse(verdict)
    conv.drop_transaction()


def _accepted(conv: Conversation, txn: Transaction, verdict: Reply, stored: int) -> None:
    """The one log line per accepted message: the queue id the client was
    told (journal field QSMTP_QUEUE_ID) and the sizes, each labelled."""
    text = verdict.text if isinstance(verdict.text, str) else " ".join(verdict.text)
    match = _QUEUED_AS.search(text)
    queue_id = match.group(1) if match else txn.id
    conv.message_queued(queue_id)
    qlog.bind(queue_id=queue_id)
    log.info("session %s: %s: queued as %s: from=<%s> nrcpt=%d size=%d wire_size=%d",
             conv.session.id, txn.id, queue_id,
             txn.sender.address if txn.sender else "", len(txn.recipients), stored,
             txn.wire_size, extra={"txn": txn.id, "queue_id": queue_id})


def _headers_end(conv: Conversation, early: list[Reply]) -> None:
    reply = conv.hook_refusal("data_headers_end")
    if reply is not None:
        early.append(reply)


def _verdict(conv: Conversation, txn: Transaction, status: DataStatus,
             early: list[Reply]) -> Reply:
    if status.bare_line_end:
        return BARE_IN_DATA
    if status.too_big:
        return TOO_BIG
    spool_error = txn.body.spool_error if txn.body is not None else None
    if spool_error is not None:
        log.error("session %s: cannot spool the message to the temp dir: %s",
                  conv.session.id, spool_error)
        return NO_SPOOL
    if early:
        return early[0]
    for hook in ("data_post", "queue_pre"):
        refusal = conv.hook_refusal(hook)
        if refusal is not None:
            return refusal
    queued = Reply(250, "2.0.0", f"Ok: queued as {txn.id}")
    reply = conv.hook_reply("queue", ok=queued, declined=NO_QUEUE)
    if reply.positive:
        conv.hook("queue_post")
    return reply


# -- STARTTLS ------------------------------------------------------------------
def start_tls(conv: Conversation, context: ssl.SSLContext) -> None:
    """After the 220: the handshake (conversation.start_tls), then forget
    what the client told us in the clear (RFC 3207 4.2): HELO, the
    transaction, AUTH."""
    tls = conv.start_tls(context)
    if tls is None:
        return
    session = conv.session
    conv.drop_transaction()
    session.tls = True
    version = tls.version() or "TLS"
    name, _, bits = tls.cipher() or ("unknown", "", 0)
    session.tls_cipher = f"{version} with cipher {name} ({bits}/{bits} bits)"
    session.helo_host, session.esmtp, session.auth_user = None, False, None
    session.notes.pop("auth_mechanism", None)
