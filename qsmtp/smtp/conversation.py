"""One connection's engine state, and the narrow interface the verb
handlers (commands.py, auth.py, transfer.py) work through.

What a verb may do to the conversation, and nothing else:
- `reply` queues a reply (replies go out together before the next read:
  PIPELINING); `refuse` queues a policy refusal, which the session outcome
  counts ("rejected"). Every 4xx/5xx passes `reply`, and `reply` writes THE
  refusal log line;
- `hook` / `hook_reply` / `hook_refusal` run a plugin hook (and remember
  which plugin decided);
- `open_transaction` / `drop_transaction` begin and end a MAIL transaction;
- `ask` sends a 334 challenge and reads the answer (AUTH), `read_message`
  reads DATA, `start_tls` upgrades the socket;
- `message_queued` counts an accepted message.

The socket belongs to the Reader alone; the session driver (session.py) reads
the outcome (`rejected`, `messages`, `last_transaction` ...) when it ends.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qsmtp import log as qlog
from qsmtp.plugins.api import DECLINED_RESULT, HookResult, Result
from qsmtp.smtp.control import SessionControl
from qsmtp.smtp.reader import MAX_AUTH_LINE, DataStatus, Reader
from qsmtp.smtp.replies import Reply, decide
from qsmtp.smtp.state import ConnectionInfo, Session, Transaction

if TYPE_CHECKING:
    import socket
    import ssl

    from qsmtp.app import App
    from qsmtp.smtp.address import Address

log = logging.getLogger("qsmtp.session")
LAST_WORDS_TIMEOUT = 5.0  # seconds: a 421 to a peer that may be gone


def redact(line: bytes) -> bytes:
    """A command line fit for a log: AUTH keeps only its mechanism."""
    stripped = line.lstrip()  # a mistyped " AUTH\t..." carries them too
    if stripped[:4].upper() != b"AUTH" or stripped[4:5] not in (b"", b" ", b"\t"):
        return line
    words = stripped[4:].split(None, 1)
    mechanism = words[0][:20] if words else b""
    return b"AUTH " + mechanism + b" [credentials not logged]"


class Conversation:
    """Per-connection engine state shared by the verb handlers."""

    def __init__(self, app: App, sock: socket.socket, conn: ConnectionInfo,
                 control: SessionControl | None):
        self.app = app
        self._plugins = app.plugins
        self._hooked = app.plugins.hooked  # hooks some plugin implements
        self.config = app.config
        self.me: str = app.config.server.me
        server = app.config.server
        self._control = control
        self._reader = Reader(sock, server.timeout, self.flush,
                              control.touch if control is not None else None,
                              self._stop_now if control is not None else None,
                              min_data_rate=server.min_data_rate,
                              max_session_time=server.max_session_time,
                              watch_tls_hello=True)
        self.session = Session(conn=conn, config=app.config,
                               peek_early_talk=self._reader.peek)
        self._out: list[bytes] = []
        # The command line a refusal refuses (the log line), redacted and
        # decoded only when a refusal or a debug line needs it.
        self._line = b"CONNECT"
        self._timeout = server.timeout
        # Per session, not per line: the level only changes at (re)load.
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._decided_by = ""  # the plugin behind the last hook's verdict
        self._closing = False
        self._rejected = False
        self.plugin_failed = False  # a hook raised or overran: the worker retires
        # The last transaction MAIL accepted (the summary's sender, recipients
        # and size), accepted messages and the queue id the client was last told.
        self.last_transaction: Transaction | None = None
        self.messages = 0
        self.queue_id: str | None = None
        self.commands_read = 0
        # Budgets of commands.py (unknown verbs, malformed lines).
        self.unrecognized = 0
        self.malformed = 0

    @property
    def closing(self) -> bool:
        """A reply closes the session (or the TLS handshake failed)."""
        return self._closing

    @property
    def rejected(self) -> bool:
        """A policy refusal was sent (see `refuse`)."""
        return self._rejected

    def _stop_now(self) -> bool:
        """Idle between commands and the worker stopping: end the session,
        unless a transaction is in flight (docs/REFERENCE.md "Precise
        rules", Stop: it may finish within the grace)."""
        return (self._control is not None and self._control.stopping
                and self.session.transaction is None)

    # -- output ------------------------------------------------------------
    def reply(self, reply: Reply, *, by_engine: bool = False) -> None:
        """Queue a reply. `by_engine`: the engine's own rule decided it,
        whatever the last hook said (the refusal log's `by=`)."""
        self._out.append(reply.wire)
        if reply.close:
            self._closing = True
        if reply.code >= 400:
            self._log_refusal(reply, "" if by_engine else self._decided_by)
        self._decided_by = ""

    def refuse(self, reply: Reply) -> None:
        """Queue a policy refusal: the session's outcome becomes "rejected"
        (unless a message was accepted)."""
        self._rejected = True
        self.reply(reply)

    def _log_refusal(self, reply: Reply, decided_by: str) -> None:
        """THE refusal log line (every 4xx/5xx reply passes here), after
        Postfix's `NOQUEUE: reject: RCPT from host[ip]: 550 5.7.1 ...;
        from=<> to=<> proto=ESMTP helo=<>`: what was refused, the reply, and
        which plugin decided (`by=`), else the engine's own rule."""
        if not log.isEnabledFor(logging.INFO):
            return
        session, txn = self.session, self.session.transaction
        command = redact(self._line).decode("utf-8", "surrogateescape")
        verb, _, arg = command.partition(" ")
        verb = verb.upper()
        fields = []
        if verb == "MAIL" and arg[:5].upper() == "FROM:":
            fields.append(f"from={arg[5:].strip()}")
        elif txn is not None and txn.sender is not None:
            fields.append(f"from=<{txn.sender.address}>")
        if verb == "RCPT" and arg[:3].upper() == "TO:":
            fields.append(f"to={arg[3:].strip()}")
        elif verb not in ("MAIL", "DATA", "CONNECT"):
            fields.append(f"cmd=<{command[:100]}>")
        fields += [f"proto={session.protocol}", f"helo=<{session.helo_host or ''}>",
                   f"by={decided_by or 'qsmtp'}"]
        text = reply.wire.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", " / ")
        log.info("session %s: %s: reject: %s from %s[%s]: %s; %s", session.id,
                 "NOQUEUE" if txn is None else txn.id, verb, session.remote_host or "unknown",
                 session.conn.peer_ip, text, " ".join(fields))

    def flush(self, timeout: float | None = None) -> None:
        """Send every queued reply in one send (PIPELINING)."""
        if not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        if self._debug:
            log.debug("session %s: S: %r", self.session.id, data)
        self._reader.send(data, self._timeout if timeout is None else timeout)

    def last_words(self, reply: Reply) -> None:
        """Best effort at the end: the queued replies plus this one (a 421
        ending the session, not a refusal); the peer may be gone. Raises
        whatever the socket raised (OSError, or AbortSession)."""
        self._out.append(reply.wire)
        self.flush(LAST_WORDS_TIMEOUT)

    def close(self) -> None:
        self._reader.close()

    # -- input ---------------------------------------------------------------
    def next_command(self) -> tuple[int, bytes]:
        """The next command line, as Reader.read_command returns it."""
        kind, line = self._reader.read_command()
        self._line = line
        self._decided_by = ""
        self.commands_read += 1
        if self._debug:
            log.debug("session %s: C: %r", self.session.id, redact(line))
        return kind, line

    def ask(self, challenge: bytes) -> tuple[int, bytes]:
        """A 334 challenge (base64, RFC 4954 4), then the client's response
        line (up to MAX_AUTH_LINE octets), never logged."""
        self._out.append(b"334 " + base64.b64encode(challenge) + b"\r\n")
        return self._reader.read_command(MAX_AUTH_LINE)

    def read_message(self, sink: Callable[[bytes], None]) -> DataStatus:
        """DATA up to its end, within `databytes` (see Reader.read_data)."""
        return self._reader.read_data(sink, self.config.server.databytes)

    def start_tls(self, context: ssl.SSLContext) -> ssl.SSLSocket | None:
        """Flush (the 220 goes out in the clear), forget any plaintext the
        client pipelined after STARTTLS (CVE-2011-0411), hand-shake. None
        when the handshake failed: the session then ends without a reply."""
        import ssl  # loaded already: the app built a TLS context (app.py)

        self.flush()
        dropped = self._reader.discard_buffer()
        if dropped:
            log.info("session %s: discarded %d plaintext bytes pipelined after STARTTLS",
                     self.session.id, dropped)
        try:
            return self._reader.start_tls(context, self._timeout)
        except (ssl.SSLError, OSError) as exc:
            log.info("session %s: TLS handshake failed: %s", self.session.id, exc)
            self._closing = True
            self._out.clear()
            return None

    # -- hooks -------------------------------------------------------------
    # Each of these answers a hook no plugin implements before any call:
    # most of the ~15 hooks a message passes have no plugin at all.
    def hook(self, name: str, *args: Any) -> HookResult:
        if name not in self._hooked:
            return DECLINED_RESULT
        result = self._plugins.run(name, self.session, *args)
        if result.failed:
            self.plugin_failed = True
        if result.result is not Result.DECLINED:
            self._decided_by = (self._plugins.decided_by
                                + (" (failed)" if result.failed else ""))
        return result

    def hook_reply(self, name: str, *args: Any, ok: Reply,
                   declined: Reply | None = None) -> Reply:
        """The reply for a hook at a stage that answers: `ok` on success,
        `declined` (default `ok`) when no plugin decided, else the refusal."""
        if name not in self._hooked:
            return ok if declined is None else declined
        return decide(name, self.hook(name, *args), ok, declined)

    def hook_refusal(self, name: str, *args: Any) -> Reply | None:
        """A hook at a stage that carries on silently: its refusal, or None."""
        if name not in self._hooked:
            return None
        reply = decide(name, self.hook(name, *args), None)
        return None if reply is None or reply.positive else reply

    # -- transactions ----------------------------------------------------------
    def open_transaction(self, sender: Address, params: dict[str, str | None]) -> Transaction:
        """MAIL: a fresh transaction, on every log line until it ends."""
        txn = self.session.new_transaction()
        txn.sender, txn.mail_params = sender, params
        qlog.bind(txn=txn.id)
        return txn

    def drop_transaction(self, *, refused: bool = False) -> None:
        """Forget the current transaction (RSET, HELO/EHLO, end of DATA,
        STARTTLS, a refused MAIL); plugins hear about it through
        reset_transaction. One that MAIL accepted (not `refused`) stays the
        session's last transaction."""
        txn = self.session.transaction
        if txn is None:
            return
        if not refused:
            self.last_transaction = txn
        if txn.body is not None:
            txn.body.close()
        self.hook("reset_transaction")
        self.session.transaction = None
        qlog.bind(txn=None)

    def message_queued(self, queue_id: str) -> None:
        self.messages += 1
        self.queue_id = queue_id
