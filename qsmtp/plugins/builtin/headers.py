"""headers -- the trace header every accepted message gets (always implied).

At `data_post`:
- prepends `Received:` (RFC 5321 4.4, protocol names from RFC 3848; an
  SMTPUTF8 transaction's are UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA as
  RFC 6531 3.7.3 registers them):
      Received: from <helo> (<remote host> [<ip>])
              by <server.me> (qsmtp) with ESMTPS (using <cipher>) id <txn id>
              for <rcpt>; <RFC 5322 date>
  `for` is only written for a single recipient (several would leak Bcc's);
  the remote host is only shown when the connection info carries one (core
  code does no DNS); IPv6 peers are written `[IPv6:...]`.
  Every value taken from the client or from DNS (HELO name, remote host,
  recipient) goes through `chars.escape`: no control character, U+2028/2029
  or invalid UTF-8 is ever written raw (the engine refuses most of them
  already; this is the last line of defence).
- renames incoming `Authentication-Results:` headers to
  `X-Original-Authentication-Results:` (RFC 8601 5: results claimed by
  someone else must not be trusted downstream).
No options.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import TYPE_CHECKING

from qsmtp.plugins.api import HookReturn, Plugin, transaction_of
from qsmtp.smtp.chars import escape
from qsmtp.smtp.message import MessageBody

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session, Transaction


_AUTH_RESULTS = re.compile(rb"(?mi)^(?=Authentication-Results[ \t]*:)")
_RENAMED_PREFIX = b"X-Original-"


class Headers(Plugin):
    """Adds Received:, neutralises incoming Authentication-Results: (no options)."""

    budgeted = False  # string work in memory: nothing a timer could cut short

    def hook_data_post(self, session: Session) -> HookReturn:
        txn = transaction_of(session)
        txn.prepend_header("Received", received_value(session, txn, self.config.server.me))
        body = txn.body
        if body is not None:
            rename_auth_results(body)
        return None


def received_value(session: Session, txn: Transaction, me: str, date: str | None = None) -> str:
    """The Received: header value, folded with LF + tab (no final line end)."""
    ip = session.conn.peer_ip
    literal = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
    tcp_info = f"{escape(session.remote_host)} {literal}" if session.remote_host else literal
    helo = escape(session.helo_host) if session.helo_host else literal
    protocol = session.protocol
    if "SMTPUTF8" in txn.mail_params and protocol.startswith("ESMTP"):
        protocol = "UTF8SMTP" + protocol[5:]
    if session.tls and session.tls_cipher:
        protocol += f" (using {session.tls_cipher})"
    lines = [f"from {helo} ({tcp_info})",
             f"by {me} (qsmtp) with {protocol} id {txn.id}"]
    stamp = date or _date_now()
    if len(txn.recipients) == 1:
        lines.append(f"for <{escape(txn.recipients[0].address)}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(stamp)
    return "\n\t".join(lines)


_stamp = (-1, "")  # (second, its RFC 5322 date): formatdate costs ~10 us


def _date_now() -> str:
    """The RFC 5322 date of this second, formatted once per second (a
    timezone offset can only change at a second boundary)."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, email.utils.formatdate(second, localtime=True))
    return _stamp[1]


def rename_auth_results(body: MessageBody) -> None:
    """Rename Authentication-Results: fields in the message's header block:
    only field names at a line start are touched, so folded continuation
    lines and the body are left alone."""
    block = body.header_block
    renamed = _AUTH_RESULTS.sub(_RENAMED_PREFIX, block)
    if renamed != block:
        body.header_block = renamed
