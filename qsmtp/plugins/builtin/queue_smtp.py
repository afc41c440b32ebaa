"""queue/smtp and queue/lmtp -- hand each message to a real MTA.

Implied when `[queue] backend` is "smtp" or "lmtp".  No options; reads
`[queue] upstream` ("host:port", "[v6]:port", or "unix:/path" for lmtp) and
`[queue] upstream_timeout` (seconds per network step).  A new connection is
made for every message (simple, and nothing goes stale between messages).

The message goes out with CRLF line ends and dot-stuffing; `txn.added_headers`
(Received: ...) come first.  BODY=8BITMIME, SMTPUTF8 and SIZE are passed on
when the client used them and the upstream offers them.

Replies (a client gets one reply at the end of DATA, however many recipients):
- 250 only when the upstream accepted the message for every recipient
  (smtp: its 250 after the data; lmtp: every per-recipient reply is 2xx);
- upstream down, timing out or closing mid-transfer: `451 4.3.0`;
- any recipient refused with 4xx: `451` (the retry can succeed);
- otherwise (some refused with 5xx, none with 4xx): DENY with the upstream's
  own text, so the client bounces.  With lmtp that can mean recipients that
  were already delivered appear in the bounce too: a duplicate notice is
  better than silently dropping a recipient.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from qsmtp.plugins.api import (
    DENY,
    DENYSOFT,
    OK,
    HookReturn,
    Plugin,
    PluginError,
    body_of,
    transaction_of,
)

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session, Transaction


TEMPFAIL = (DENYSOFT, "4.3.0 Upstream mail server unavailable, try again later")
_SEND_BATCH = 1 << 18
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")


class UpstreamRefused(Exception):
    """The upstream answered a step with a non-2xx/3xx reply."""

    def __init__(self, code: int, text: str):
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


class QueueSmtp(Plugin):
    """Forwards to `[queue] upstream` over SMTP (`queue/smtp`) or LMTP (`queue/lmtp`)."""

    def setup(self) -> None:
        self.lmtp = self.name.endswith("lmtp")
        self.host, self.port = parse_upstream(self.config.queue.upstream, self.lmtp, self.name)
        self.timeout = float(self.config.queue.upstream_timeout)

    def hook_queue(self, session: Session) -> HookReturn:
        txn = transaction_of(session)
        try:
            client = self.connect()
        except (OSError, smtplib.SMTPException) as exc:
            self.log.error("session %s: upstream %s:%s unreachable: %s",
                           session.id, self.host, self.port, exc)
            return TEMPFAIL
        polite = False  # QUIT only on a healthy connection: never wait on a broken one
        try:
            result = self.transfer(client, session, txn)
            polite = True
            return result
        except UpstreamRefused as exc:
            polite = True
            return self.refused(session, exc.code, exc.text)
        except (OSError, smtplib.SMTPException) as exc:
            self.log.error("session %s: upstream %s:%s failed during transfer: %s",
                           session.id, self.host, self.port, exc)
            return TEMPFAIL
        finally:
            _close(client, polite)

    def connect(self) -> smtplib.SMTP:
        cls = smtplib.LMTP if self.lmtp else smtplib.SMTP
        client = cls(local_hostname=self.config.server.me, timeout=self.timeout)
        try:
            code, text = client.connect(self.host, self.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, text)
            code, text = client.ehlo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, text)
        except BaseException:
            _close(client, polite=False)
            raise
        return client

    def transfer(self, client: smtplib.SMTP, session: Session, txn: Transaction) -> HookReturn:
        """MAIL, RCPT..., DATA; returns the hook result for the client."""
        options = self.mail_options(client, txn)
        if "SMTPUTF8" in options:
            if not client.has_extn("smtputf8"):
                return DENY, "5.6.7 Upstream mail server does not support SMTPUTF8"
            client.command_encoding = "utf-8"
        sender = txn.sender.address if txn.sender is not None else ""
        _expect(client.docmd("mail", f"FROM:<{sender}>" + "".join(" " + o for o in options)),
                250)
        accepted, refused = 0, []
        for rcpt in txn.recipients:
            code, text = client.docmd("rcpt", f"TO:<{rcpt.address}>")
            if code in (250, 251):
                accepted += 1
            else:
                refused.append((code, _text(text)))
        if refused:
            _reset(client)
            return self.verdict(session, refused)
        _expect(client.docmd("data"), 354)
        send_data(client, wire_chunks(txn))
        # LMTP answers once per accepted recipient (RFC 2033 4.2), SMTP once.
        replies = [client.getreply() for _ in range(accepted if self.lmtp else 1)]
        failed = [(code, _text(text)) for code, text in replies if code != 250]
        if failed:
            return self.verdict(session, failed)
        last = _text(replies[-1][1])
        self.log.info("session %s: %s handed to %s:%s: %s", session.id, txn.id,
                      self.host, self.port, last)
        return OK, f"2.0.0 Ok: queued as {txn.id} (upstream: {last})"

    def mail_options(self, client: smtplib.SMTP, txn: Transaction) -> list[str]:
        params = {k.upper(): v for k, v in (txn.mail_params or {}).items()}
        options = []
        if client.has_extn("size") and txn.body is not None:
            options.append(f"SIZE={txn.body.size}")
        body = (params.get("BODY") or "").upper()
        if body == "8BITMIME" and client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if "SMTPUTF8" in params:
            options.append("SMTPUTF8")
        return options

    def verdict(self, session: Session, failures: list[tuple[int, str]]) -> HookReturn:
        """One reply for the client from the upstream's refusals: temporary
        if any of them is (a retry can succeed), else the first permanent one."""
        soft = [f for f in failures if f[0] < 500]
        code, text = (soft or failures)[0]
        return self.refused(session, code, text)

    def refused(self, session: Session, code: int, text: str) -> HookReturn:
        self.log.warning("session %s: upstream %s:%s refused: %s %s",
                         session.id, self.host, self.port, code, text)
        if 500 <= code < 600:
            return DENY, _with_status(text, "5.0.0")
        return DENYSOFT, _with_status(text, "4.3.0")


def wire_chunks(txn: Transaction) -> Iterable[bytes]:
    """The message as SMTP DATA content: CRLF line ends, dot-stuffed, ending
    in CRLF (the final "." line is sent by the caller)."""
    at_line_start = True
    last = b"\n"
    head = "".join(h + "\n" for h in txn.added_headers).encode("utf-8", "surrogateescape")
    for chunk in _chain(head, body_of(txn).iter_chunks()):
        if not chunk:
            continue
        if at_line_start and chunk[:1] == b".":
            chunk = b"." + chunk
        chunk = chunk.replace(b"\n.", b"\n..")
        last = chunk[-1:]
        at_line_start = last == b"\n"
        yield chunk.replace(b"\n", b"\r\n")
    if last != b"\n":
        yield b"\r\n"


def send_data(client: smtplib.SMTP, chunks: Iterable[bytes]) -> None:
    """Send DATA content plus the final dot in as few writes as possible
    (one for a typical message)."""
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= _SEND_BATCH:
            client.send(b"".join(pending))
            pending, size = [], 0
    pending.append(b".\r\n")
    client.send(b"".join(pending))


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterable[bytes]:
    yield first
    yield from rest


def parse_upstream(value: str, lmtp: bool, plugin: str) -> tuple[str, int]:
    """'host:port' / '[v6]:port' / 'unix:/path' (lmtp) -> (host, port)."""
    if value.startswith("unix:"):
        path = value[5:]
        if not lmtp or not path.startswith("/"):
            raise PluginError(plugin, "queue.upstream",
                              "unix:/absolute/path is only for backend lmtp")
        return path, 0
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PluginError(plugin, "queue.upstream",
                          f"expected host:port or unix:/path (got {value!r})")
    return host, int(port)


def _expect(reply: tuple[int, bytes], want: int) -> None:
    code, text = reply
    if code != want:
        raise UpstreamRefused(code, _text(text))


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())  # multi-line replies become one line


def _with_status(text: str, default: str) -> str:
    return text if _ENHANCED.match(text) else f"{default} {text}".strip()


def _reset(client: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError, smtplib.SMTPException):
        client.rset()


def _close(client: smtplib.SMTP, polite: bool) -> None:
    try:
        if polite and client.sock is not None:
            client.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        client.close()
