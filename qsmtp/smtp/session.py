"""The session driver: one connection from greeting to close.

`run_session` never raises to its caller (except KeyboardInterrupt /
SystemExit) and never shows a traceback to a client: every error path ends
in an SMTP reply with an enhanced status code, or a silent close when the
peer is gone or is not speaking SMTP at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qsmtp import log as qlog
from qsmtp.smtp import commands
from qsmtp.smtp.control import AbortSession, SessionControl
from qsmtp.smtp.conversation import Conversation
from qsmtp.smtp.reader import PeerClosed, ReadTimeout, StopRequested, TLSOnPlainPort
from qsmtp.smtp.replies import Reply, constant

if TYPE_CHECKING:
    import socket

    from qsmtp.app import App
    from qsmtp.smtp.state import ConnectionInfo

log = logging.getLogger("qsmtp.session")


@dataclass(frozen=True)
class SessionSummary:
    """What the worker logs and acts on after a session; built at the end
    from the conversation and its last transaction."""

    peer: str
    session_id: str
    helo: str | None
    sender: str | None  # of the last transaction MAIL accepted
    recipients: int  # of the last transaction
    size: int  # octets of the last transaction's message on the wire
    result: str  # accepted / rejected / aborted / timeout / closed
    messages: int  # accepted
    queue_id: str | None  # of the last accepted message
    duration: float
    plugin_failed: bool


def run_session(app: App, sock: socket.socket, conn: ConnectionInfo,
                control: SessionControl | None = None) -> SessionSummary:
    """Serve one connection; never raises (but KeyboardInterrupt/SystemExit)."""
    started = time.monotonic()
    conv = Conversation(app, sock, conn, control)
    qlog.unbind()
    qlog.bind(session=conv.session.id, peer=conn.peer_ip, service=conn.service)
    result = _converse(conv)
    _finish(conv)
    return _summary(conv, result, time.monotonic() - started)


def _converse(conv: Conversation) -> str:
    """The conversation and how it ended (the summary's result)."""
    me, sid, peer = conv.me, conv.session.id, conv.session.conn.peer_ip
    try:
        if _greet(conv):
            while not conv.closing:
                commands.execute(conv, *conv.next_command())
        conv.flush()
        return _outcome(conv)
    except AbortSession:
        _last_words(conv, Reply(421, "4.3.2", f"{me} Service shutting down"))
        return "aborted"
    except StopRequested:  # the one stop path: idle, and the worker is stopping
        _last_words(conv, Reply(421, "4.3.2", f"{me} Service shutting down"))
        return _outcome(conv)
    except ReadTimeout as exc:
        log.info("session %s: %s timed out: %s", sid, peer, exc.text.lower())
        _last_words(conv, Reply(421, "4.4.2", f"{me} {exc.text}"))
        return "timeout"
    except TLSOnPlainPort:
        log.info("session %s: %s sent a TLS handshake to the plain port; closed", sid, peer)
        return "rejected"
    except (PeerClosed, OSError):
        return _outcome(conv)
    except Exception:
        log.exception("session %s: internal error", sid)
        _last_words(conv, Reply(421, "4.3.0", f"{me} Internal error, closing"))
        return "aborted"


def _greet(conv: Conversation) -> bool:
    """The connect-stage hooks, then the 220 (or their refusal, and close)."""
    greeting = constant(220, "", f"{conv.me} ESMTP qsmtp")
    for hook in ("pre_connection", "connect"):
        reply = conv.hook_reply(hook, ok=greeting)
        if reply is not None and not reply.positive:
            if not reply.close:  # a plugin failure: no 451 greeting
                reply = Reply(421, "4.3.0", f"{conv.me} Temporary local problem, "
                              "try again later", close=True)
            conv.refuse(reply)
            return False
    conv.reply(greeting)
    return True


def _outcome(conv: Conversation) -> str:
    if conv.messages:
        return "accepted"
    return "rejected" if conv.rejected else "closed"


def _last_words(conv: Conversation, reply: Reply) -> None:
    with contextlib.suppress(OSError, AbortSession):  # the peer may be gone
        conv.last_words(reply)


def _finish(conv: Conversation) -> None:
    """Hooks that must always run; their results do not matter."""
    try:
        conv.drop_transaction()
        conv.hook("disconnect")
        conv.hook("post_connection")
    except AbortSession:
        pass
    except Exception:
        log.exception("session %s: error while closing", conv.session.id)
    conv.close()


def _summary(conv: Conversation, result: str, duration: float) -> SessionSummary:
    session, txn = conv.session, conv.last_transaction
    return SessionSummary(
        peer=session.conn.peer_ip, session_id=session.id, helo=session.helo_host,
        sender=txn.sender.address if txn is not None and txn.sender is not None else None,
        recipients=len(txn.recipients) if txn is not None else 0,
        size=txn.wire_size if txn is not None else 0,
        result=result, messages=conv.messages, queue_id=conv.queue_id,
        duration=duration, plugin_failed=conv.plugin_failed)
