"""clamav -- refuse messages clamd finds a virus in.

At `data_post` the message is streamed to clamd with `zINSTREAM`: chunks of
at most 64 KiB, each preceded by its length (4 bytes, network order), then a
zero length; the body is read from memory or its spool file a chunk at a
time, never held twice.  clamd parses the MIME structure itself (attachments
are decoded and scanned).

- infected (`stream: <name> FOUND`): `552 5.7.1 Virus found: <name>`;
- clean: `X-Virus-Checked: Checked by ClamAV on <server.me>` is added
  (unless `header = false`);
- clamd unreachable, timing out or answering with an error: `on_error`;
- larger than `max_size`, or refused by clamd's own StreamMaxLength
  (`INSTREAM size limit exceeded`): passed unscanned and logged.  A size
  refusal is permanent, so deferring would only make the client retry the
  same message until it bounces: keep `max_size` at or below clamd's
  StreamMaxLength (both default to 25 MiB) so messages are never cut short.

The result is kept in `transaction.notes["clamav"]` (`virus` or `clean`).

Options:
- `address` (default `unix:/run/clamav/clamd.ctl`, Debian's LocalSocket):
  clamd's `unix:/path`, `/path`, `host:port` or `[v6]:port` (TCPSocket).
- `timeout` (float, default 20): seconds for the whole scan; must be below
  `server.hook_timeout`.
- `max_size` (int, default 26214400): larger messages are not scanned.
- `on_error` (`defer` | `pass`, default `defer`): scanner down or failing:
  `defer` refuses with `451 4.3.0` (fail closed), `pass` accepts unscanned.
- `header` (bool, default true): add `X-Virus-Checked` to clean messages.

qpsmtpd mapping: `virus/clamdscan clamd_socket /path|H:P` -> `address`;
`max_size` (qpsmtpd: kB) -> `max_size` in bytes; `deny_viruses yes` is the
only behaviour; `defer_on_error 1|0` -> `on_error = "defer"|"pass"`.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from qsmtp.plugins.api import DECLINED, DENY, HookResult, HookReturn, Option, transaction_of
from qsmtp.plugins.builtin import _scanner

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session, Transaction


REPLY_LIMIT = 4096
_END = struct.pack("!I", 0)


class ClamdError(Exception):
    """clamd answered, but not with a verdict."""


class TooLarge(Exception):
    """clamd refused the stream as longer than its StreamMaxLength."""


class ClamAV(_scanner.Scanner):
    """Scans messages with clamd (INSTREAM) and refuses infected ones with 552."""

    options = {
        **_scanner.scanner_options("unix:/run/clamav/clamd.ctl", 20.0, 26214400),
        "header": Option(bool, True, "add X-Virus-Checked to clean messages"),
    }

    def setup(self) -> None:
        _scanner.check_common(self)

    def hook_data_post(self, session: Session) -> HookReturn:
        txn = transaction_of(session)
        if txn.body is None:
            return DECLINED
        size = _scanner.message_size(txn)
        if size > self.opts.max_size:
            return self.unscanned(session, txn, f"{size} bytes > max_size {self.opts.max_size}")
        try:
            virus = self.scan(txn)
        except TooLarge:
            return self.unscanned(session, txn, f"{size} bytes refused by clamd's "
                                  "StreamMaxLength (lower max_size to match it)")
        except (OSError, ClamdError) as exc:
            return _scanner.unavailable(self, session, f"clamd {self.opts.address}: "
                                        f"{type(exc).__name__}: {exc}")
        if virus:
            txn.notes[self.name] = {"virus": virus}
            self.log.warning("session %s: %s virus %s (from=<%s>)", session.id, txn.id, virus,
                             txn.sender.address if txn.sender else "")
            return HookResult(DENY, f"5.7.1 Virus found: {virus}", code=552)
        txn.notes[self.name] = {"clean": True}
        if self.opts.header:
            txn.prepend_header("X-Virus-Checked", f"Checked by ClamAV on {self.config.server.me}")
        return DECLINED

    def unscanned(self, session: Session, txn: Transaction, why: str) -> HookReturn:
        self.log.warning("session %s: %s not scanned: %s", session.id, txn.id, why)
        txn.notes[self.name] = {"skipped": why}
        return DECLINED

    def scan(self, txn: Transaction) -> str | None:
        """The signature name clamd found, or None when clean."""
        with _scanner.Connection(self.family, self.sockaddr, self.opts.timeout) as conn:
            conn.send(b"zINSTREAM\0")
            try:
                for chunk in _scanner.message_chunks(txn):
                    if chunk:  # one write per chunk: length prefix + data
                        conn.send(struct.pack("!I", len(chunk)) + chunk)
                conn.send(_END)
            except (BrokenPipeError, ConnectionResetError):
                # clamd stops reading when the stream passes its limit and
                # says why before closing: read that, if it got through.
                pass
            return parse_reply(conn.read_all(REPLY_LIMIT, until=b"\0"))


def parse_reply(raw: bytes) -> str | None:
    """`stream: OK` -> None; `stream: <name> FOUND` -> name; else raise."""
    text = raw.split(b"\0", 1)[0].decode("latin-1").strip()
    if not text:
        raise ClamdError("no reply")
    if "size limit exceeded" in text:
        raise TooLarge(text)
    _, sep, result = text.partition(": ")
    if not sep:
        raise ClamdError(_scanner.printable(text))
    if result == "OK":
        return None
    if result.endswith(" FOUND"):
        return _scanner.printable(result[:-6].strip()) or "unknown"
    raise ClamdError(_scanner.printable(text))
