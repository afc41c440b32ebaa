"""The session driver: one connection from greeting to close.

`run_session` never raises to its caller (except KeyboardInterrupt /
SystemExit) and never shows a traceback to a client: every error path ends
in an SMTP reply with an enhanced status code, or a silent close when the
peer is gone or is not speaking SMTP at all.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

from qsmtp import log as qlog
from qsmtp.plugins.api import HookResult, Result
from qsmtp.smtp import auth, commands
from qsmtp.smtp.reader import (PeerClosed, ReadTimeout, Reader, StopRequested,
                               TLSOnPlainPort)
from qsmtp.smtp.replies import Reply, decide
from qsmtp.smtp.state import ConnectionInfo, Session

log = logging.getLogger("qsmtp.session")
DEBUG = logging.DEBUG


class AbortSession(BaseException):
    """Raised by the worker (from a signal handler) to end a session now.
    A BaseException so that `except Exception` in plugins cannot eat it."""


class SessionControl(Protocol):
    stopping: bool

    def touch(self) -> None: ...


@dataclass
class SessionSummary:
    peer: str = ""
    session_id: str = ""
    helo: str | None = None
    sender: str | None = None  # of the last transaction
    recipients: int = 0  # of the last transaction
    size: int = 0  # octets of the last message
    result: str = "closed"  # accepted / rejected / aborted / timeout / closed
    messages: int = 0  # accepted
    queue_id: str | None = None  # of the last accepted message
    duration: float = 0.0
    plugin_failed: bool = False


class Conversation:
    """Per-connection engine state shared by the verb handlers."""

    def __init__(self, app: Any, sock: socket.socket, conn: ConnectionInfo,
                 control: SessionControl | None):
        self.app = app
        self.config = app.config
        self.me: str = app.config.server.me
        self.sock = sock
        self.control = control
        self.session = Session(conn=conn, config=app.config)
        # earlytalker asks the engine whether the client talked early.
        self.session.peek_early_talk = self._peek  # type: ignore[attr-defined]
        self.summary = SessionSummary(peer=conn.peer_ip, session_id=self.session.id,
                                      result="closed")
        self.command = "CONNECT"  # what a refusal refuses (the log line)
        self.decided_by = ""  # the plugin behind the last hook's verdict
        self.out: list[bytes] = []
        self.closing = False
        self.rejected = False
        self.unrecognized = 0
        self.malformed = 0
        self.commands_seen = 0
        # Idle between commands and stopping: close now, unless a transaction
        # is in flight (docs/REFERENCE.md "Precise rules", Stop: it may finish within the grace).
        stopping = ((lambda: control.stopping and self.session.transaction is None)
                    if control is not None else None)
        touch = control.touch if control is not None else None
        server = app.config.server
        self.reader = Reader(sock, server.timeout, self.flush, touch, stopping,
                             min_data_rate=server.min_data_rate,
                             max_session_time=server.max_session_time)

    # -- output ------------------------------------------------------------
    def reply(self, reply: Reply) -> None:
        self.out.append(reply.wire)
        if reply.close:
            self.closing = True
        if reply.code >= 400:
            self._log_refusal(reply)

    def _log_refusal(self, reply: Reply) -> None:
        """THE refusal log line (every 4xx/5xx the engine sends passes
        here), after Postfix's `NOQUEUE: reject: RCPT from host[ip]: 550
        5.7.1 ...; from=<> to=<> proto=ESMTP helo=<>`: what was refused, the
        reply, and which plugin decided (`by=`), else the engine's own rule."""
        if not log.isEnabledFor(logging.INFO):
            return
        session, txn = self.session, self.session.transaction
        verb, _, arg = self.command.partition(" ")
        verb = verb.upper()
        fields = []
        if verb == "MAIL" and arg[:5].upper() == "FROM:":
            fields.append(f"from={arg[5:].strip()}")
        elif txn is not None and txn.sender is not None:
            fields.append(f"from=<{txn.sender.address}>")
        if verb == "RCPT" and arg[:3].upper() == "TO:":
            fields.append(f"to={arg[3:].strip()}")
        elif verb not in ("MAIL", "DATA", "CONNECT"):
            fields.append(f"cmd=<{self.command[:100]}>")
        fields += [f"proto={session.protocol}", f"helo=<{session.helo_host or ''}>",
                   f"by={self.decided_by or 'qsmtp'}"]
        text = reply.wire.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", " / ")
        log.info("session %s: %s: reject: %s from %s[%s]: %s; %s", session.id,
                 "NOQUEUE" if txn is None else txn.id, verb, session.remote_host or "unknown",
                 session.conn.peer_ip, text, " ".join(fields))
        self.decided_by = ""

    def flush(self) -> None:
        """Send every queued reply in one send (PIPELINING)."""
        if not self.out:
            return
        data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
        self.out.clear()
        if log.isEnabledFor(DEBUG):
            log.debug("session %s: S: %r", self.session.id, data)
        self.sock.settimeout(self.config.server.timeout)
        self.sock.sendall(data)

    # -- hooks -------------------------------------------------------------
    def hook(self, name: str, *args: Any) -> HookResult:
        result = self.app.plugins.run(name, self.session, *args)
        if result.failed:
            self.summary.plugin_failed = True
        if result.result is not Result.DECLINED:
            self.decided_by = self.app.plugins.decided_by + (" (failed)" if result.failed else "")
        return result

    def hook_reply(self, name: str, *args: Any, ok: Reply | None,
                   declined: Reply | None = None) -> Reply | None:
        return decide(name, self.hook(name, *args), ok, declined)

    def drop_transaction(self) -> None:
        """Forget the current transaction (RSET, HELO/EHLO, end of DATA,
        STARTTLS); plugins hear about it through reset_transaction."""
        txn = self.session.transaction
        if txn is None:
            return
        if txn.body is not None:
            txn.body.close()
        self.hook("reset_transaction")
        self.session.transaction = None
        qlog.bind(txn=None)

    def _peek(self, wait: float) -> bool:
        return self.reader.peek(wait)

    # -- the conversation --------------------------------------------------
    def run(self) -> None:
        if not self.greet():
            return
        self.reader.watch_tls_hello = True
        while not self.closing:
            if self.control is not None and self.control.stopping \
                    and self.session.transaction is None and not self.reader.has_line():
                self.reply(Reply(421, "4.3.2", f"{self.me} Service shutting down", close=True))
                break
            kind, line = self.reader.read_command()
            self.command = auth.redact(line).decode("utf-8", "surrogateescape")
            self.decided_by = ""
            if log.isEnabledFor(DEBUG):
                log.debug("session %s: C: %r", self.session.id, auth.redact(line))
            commands.execute(self, kind, line)
            self.commands_seen += 1
        self.flush()

    def greet(self) -> bool:
        greeting = Reply(220, "", f"{self.me} ESMTP qsmtp")
        for hook in ("pre_connection", "connect"):
            reply = self.hook_reply(hook, ok=greeting)
            if not reply.positive:
                self.rejected = True
                if not reply.close:  # a plugin failure: no 451 greeting
                    reply = Reply(421, "4.3.0", f"{self.me} Temporary local problem, "
                                  "try again later", close=True)
                self.reply(reply)
                self.flush()
                return False
        self.reply(greeting)
        return True


def run_session(app: Any, sock: socket.socket, conn: ConnectionInfo,
                control: SessionControl | None = None) -> SessionSummary:
    """Serve one connection; never raises (but KeyboardInterrupt/SystemExit)."""
    started = time.monotonic()
    conv = Conversation(app, sock, conn, control)
    qlog.unbind()
    qlog.bind(session=conv.session.id, peer=conn.peer_ip, service=conn.service)
    summary = conv.summary
    try:
        conv.run()
        summary.result = _outcome(conv)
    except AbortSession:
        summary.result = "aborted"
        _last_words(conv, Reply(421, "4.3.2", f"{conv.me} Service shutting down"))
    except ReadTimeout as exc:
        summary.result = "timeout"
        log.info("session %s: %s timed out: %s", conv.session.id, conn.peer_ip,
                 exc.text.lower())
        _last_words(conv, Reply(421, "4.4.2", f"{conv.me} {exc.text}"))
    except StopRequested:
        summary.result = _outcome(conv)
        _last_words(conv, Reply(421, "4.3.2", f"{conv.me} Service shutting down"))
    except TLSOnPlainPort:
        summary.result = "rejected"
        log.info("session %s: %s sent a TLS handshake to the plain port; closed",
                 conv.session.id, conn.peer_ip)
    except (PeerClosed, OSError):
        summary.result = _outcome(conv)
    except Exception:
        summary.result = "aborted"
        log.exception("session %s: internal error", conv.session.id)
        _last_words(conv, Reply(421, "4.3.0", f"{conv.me} Internal error, closing"))
    _finish(conv)
    summary.duration = time.monotonic() - started
    return summary


def _outcome(conv: Conversation) -> str:
    if conv.summary.messages:
        return "accepted"
    return "rejected" if conv.rejected else "closed"


def _last_words(conv: Conversation, reply: Reply) -> None:
    """Best effort: queued replies plus a final 421; the peer may be gone."""
    conv.out.append(reply.wire)
    try:
        conv.sock.settimeout(5)
        conv.flush()
    except (OSError, AbortSession):
        pass


def _finish(conv: Conversation) -> None:
    """Hooks that must always run; their results do not matter."""
    conv.summary.helo = conv.session.helo_host
    try:
        conv.drop_transaction()
        conv.hook("disconnect")
        conv.hook("post_connection")
    except AbortSession:
        pass
    except Exception:
        log.exception("session %s: error while closing", conv.session.id)
    try:
        conv.sock.close()
    except OSError:
        pass
