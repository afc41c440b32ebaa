"""The multi-step verbs: DATA (message transfer through the DATA-stage
hooks to the queue), STARTTLS (the socket changes under the session). AUTH is in auth.py."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from qsmtp import log as qlog

from qsmtp.smtp.message import MessageBody
from qsmtp.smtp.reader import DataStatus
from qsmtp.smtp.replies import Reply

if TYPE_CHECKING:
    from qsmtp.smtp.session import Conversation

log = logging.getLogger("qsmtp.session")

GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
BARE_IN_DATA = Reply(554, "5.6.0", "Message contains bare CR or LF; not accepted")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
NO_QUEUE = Reply(451, "4.3.0", "No queue accepted the message, try again later")
NO_SPOOL = Reply(451, "4.3.0", "Local error in processing, try again later")
# The id the client is told ("queued as <id>", whichever queue plugin said it).
_QUEUED_AS = re.compile(r"queued as (\S+)")


# -- DATA ----------------------------------------------------------------------
def receive(conv: "Conversation") -> None:
    txn = conv.session.transaction
    reply = conv.hook_reply("data", ok=GO_AHEAD)
    if not reply.positive:
        conv.rejected = True
        return conv.reply(reply)
    conv.reply(GO_AHEAD)
    body = txn.body = MessageBody()
    early: list[Reply] = []  # a refusal at data_headers_end

    def sink(data: bytes) -> None:
        if not early and body.write(data):
            _headers_end(conv, early)

    status = conv.reader.read_data(sink, conv.config.server.databytes)
    if not (status.bare_line_end or status.too_big or early) and body.finish():
        _headers_end(conv, early)
    conv.summary.size = status.wire_size
    verdict = _verdict(conv, status, early)
    if verdict.positive:
        _accepted(conv, txn, verdict, body.size, status.wire_size)
    else:
        conv.rejected = True  # the refusal is logged where the reply goes out
    conv.reply(verdict)
    conv.drop_transaction()


def _accepted(conv: "Conversation", txn, verdict: Reply, stored: int, wire: int) -> None:
    """The one log line per accepted message: the queue id the client was
    told (journal field QSMTP_QUEUE_ID) and the sizes, each labelled."""
    text = verdict.text if isinstance(verdict.text, str) else " ".join(verdict.text)
    match = _QUEUED_AS.search(text)
    queue_id = match.group(1) if match else txn.id
    conv.summary.messages += 1
    conv.summary.queue_id = queue_id
    qlog.bind(queue_id=queue_id)
    log.info("session %s: %s: queued as %s: from=<%s> nrcpt=%d size=%d wire_size=%d",
             conv.session.id, txn.id, queue_id,
             txn.sender.address if txn.sender else "", len(txn.recipients), stored, wire,
             extra={"txn": txn.id, "queue_id": queue_id})


def _headers_end(conv: "Conversation", early: list[Reply]) -> None:
    reply = conv.hook_reply("data_headers_end", ok=None)
    if reply is not None and not reply.positive:
        early.append(reply)


def _verdict(conv: "Conversation", status: DataStatus, early: list[Reply]) -> Reply:
    if status.bare_line_end:
        return BARE_IN_DATA
    if status.too_big:
        return TOO_BIG
    spool_error = conv.session.transaction.body.spool_error
    if spool_error is not None:
        log.error("session %s: cannot spool the message to the temp dir: %s",
                  conv.session.id, spool_error)
        return NO_SPOOL
    if early:
        return early[0]
    for hook in ("data_post", "queue_pre"):
        reply = conv.hook_reply(hook, ok=None)
        if reply is not None and not reply.positive:
            return reply
    txn = conv.session.transaction
    queued = Reply(250, "2.0.0", f"Ok: queued as {txn.id}")
    reply = conv.hook_reply("queue", ok=queued, declined=NO_QUEUE)
    if reply.positive:
        conv.hook("queue_post")
    return reply


# -- STARTTLS ------------------------------------------------------------------
def start_tls(conv: "Conversation") -> None:
    """Send the 220, forget any plaintext the client pipelined after
    STARTTLS (CVE-2011-0411), hand-shake, and forget what the client told
    us in the clear (RFC 3207 4.2): HELO, the transaction, AUTH."""
    import ssl  # loaded already: the app built a TLS context (app.py)

    conv.flush()
    dropped = conv.reader.discard_buffer()
    if dropped:
        log.info("session %s: discarded %d plaintext bytes pipelined after STARTTLS",
                 conv.session.id, dropped)
    try:
        conv.sock.settimeout(conv.config.server.timeout)
        tls = conv.app.tls_context.wrap_socket(conv.sock, server_side=True,
                                               do_handshake_on_connect=False)
        conv.sock = conv.reader.sock = tls
        tls.do_handshake()
    except (ssl.SSLError, OSError) as exc:
        log.info("session %s: TLS handshake failed: %s", conv.session.id, exc)
        conv.closing = True
        conv.out.clear()
        return
    session = conv.session
    conv.drop_transaction()
    session.tls = True
    version = tls.version() or "TLS"
    name, _, bits = tls.cipher() or ("unknown", "", 0)
    session.tls_cipher = f"{version} with cipher {name} ({bits}/{bits} bits)"
    session.helo_host, session.esmtp, session.auth_user = None, False, None
    session.notes.pop("auth_mechanism", None)
