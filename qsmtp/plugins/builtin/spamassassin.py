"""spamassassin -- score each message with spamd, tag it, refuse the worst.

At `data_post` the message (with the headers other plugins added so far) is
streamed to spamd with the spamc protocol (`SYMBOLS SPAMC/1.5`, exact
`Content-length`, body read 64 KiB at a time from memory or from its spool
file: a large message is never held in memory a second time).  spamd answers
with the verdict (`Spam: True ; 7.9 / 5.0`) and the names of the rules that
hit; from these the plugin adds, above the message:

    X-Spam-Flag: YES                      (only when spamd calls it spam)
    X-Spam-Score: 7.9
    X-Spam-Level: *******                 (one star per point, at most 50)
    X-Spam-Status: Yes, score=7.9 required=5.0 tests=GTUBE,MISSING_DATE

`X-Spam-*` fields already in the incoming message are renamed to
`X-Old-Spam-*` (or dropped, or kept: `old_headers`), so a sender cannot
pre-label its own message for the filters downstream.  The verdict is kept
in `transaction.notes["spamassassin"]` (`spam`, `score`, `required`,
`tests`) for later plugins.

Options:
- `address` (default `127.0.0.1:783`): spamd's `host:port`, `[v6]:port`, or
  its unix socket as `unix:/path` (spamd `--socketpath`).
- `timeout` (float, default 20): seconds for the whole exchange (connect,
  send, scan, answer). Must be below `server.hook_timeout`.
- `max_size` (int, default 512000, spamc's default): larger messages are
  not scanned, and get no tags (logged).
- `reject_score` (float, unset by default = tag only): refuse the message
  with `550 5.7.1` when its score is at least this.
- `on_error` (`defer` | `pass`, default `defer`): what to do when spamd is
  unreachable, times out or answers with an error: `defer` refuses with
  `451 4.3.0` (the client retries later: no message goes through unscanned),
  `pass` accepts it untagged.
- `user` (default none): the user name sent to spamd (`User:` header of the
  protocol) for per-user preferences.
- `old_headers` (`rename` | `drop` | `keep`, default `rename`).

The scan also runs for relay clients and authenticated senders (outgoing
spam is worth catching too).  A spam verdict lowers the connection's karma.

qpsmtpd mapping: `spamassassin spamd_socket H:P|/path` -> `address`;
`reject_threshold N` / `reject N` -> `reject_score = N`; `spamd_user` ->
`user`; `leave_old_headers drop|keep|rename` -> `old_headers`; qpsmtpd's
`munge_subject_threshold` is not implemented (tags are headers only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qsmtp.plugins.api import (
    DECLINED,
    DENY,
    HookResult,
    HookReturn,
    Option,
    PluginError,
    transaction_of,
)
from qsmtp.plugins.builtin import _scanner
from qsmtp.plugins.builtin.naughty import adjust_karma

if TYPE_CHECKING:
    from qsmtp.plugins.api import HookReturn
    from qsmtp.smtp.state import Session, Transaction


RESPONSE_LIMIT = 1 << 16
_STATUS = re.compile(rb"^SPAMD/(\d+\.\d+) +(\d+) *(.*)$")
_SPAM = re.compile(rb"^Spam: *(True|False|Yes|No) *; *(-?[\d.]+) */ *(-?[\d.]+) *$", re.I)
_OLD = re.compile(rb"(?mi)^X-Spam-")
_OLD_FIELD = re.compile(rb"(?mi)^X-Spam-[^\n]*\n(?:[ \t][^\n]*\n)*")
_RULE = re.compile(r"^[A-Za-z0-9_.:-]+$")


class SpamdError(Exception):
    """spamd answered, but not with a usable verdict."""


@dataclass(frozen=True)
class Verdict:
    spam: bool
    score: float
    required: float
    tests: tuple[str, ...]


class SpamAssassin(_scanner.Scanner):
    """Scores messages with spamd; tags them and refuses above `reject_score`."""

    options = {
        **_scanner.scanner_options("127.0.0.1:783", 20.0, 512000),
        "reject_score": Option(float, None, "refuse (550 5.7.1) at or above this score"),
        "user": Option(str, "", "user name sent to spamd"),
        "old_headers": Option(str, "rename", "incoming X-Spam-* fields",
                              choices=("rename", "drop", "keep")),
    }

    def setup(self) -> None:
        _scanner.check_common(self)
        if "\r" in self.opts.user or "\n" in self.opts.user:
            raise PluginError(self.name, "user", "must be one line")

    def hook_data_post(self, session: Session) -> HookReturn:
        txn = transaction_of(session)
        if txn.body is None:
            return DECLINED
        neutralise_old_headers(txn.body, self.opts.old_headers)
        size = _scanner.message_size(txn)
        if size > self.opts.max_size:
            self.log.info("session %s: %s not scanned: %d bytes > max_size %d",
                          session.id, txn.id, size, self.opts.max_size)
            txn.notes[self.name] = {"skipped": size}
            return DECLINED
        try:
            verdict = self.check(txn, size)
        except (OSError, SpamdError) as exc:
            return _scanner.unavailable(self, session, f"spamd {self.opts.address}: "
                                        f"{type(exc).__name__}: {exc}")
        return self.apply(session, txn, verdict)

    def check(self, txn: Transaction, size: int) -> Verdict:
        request = f"SYMBOLS SPAMC/1.5\r\nContent-length: {size}\r\n"
        if self.opts.user:
            request += f"User: {self.opts.user}\r\n"
        with _scanner.Connection(self.family, self.sockaddr, self.opts.timeout) as conn:
            conn.send((request + "\r\n").encode("utf-8"))
            sent = 0
            for chunk in _scanner.message_chunks(txn):
                conn.send(chunk)
                sent += len(chunk)
            if sent != size:  # the body changed under us: spamd would hang
                raise SpamdError(f"sent {sent} bytes, announced {size}")
            conn.shutdown_write()
            return parse_response(conn.read_all(RESPONSE_LIMIT))

    def apply(self, session: Session, txn: Transaction, verdict: Verdict) -> HookReturn:
        txn.notes[self.name] = {"spam": verdict.spam, "score": verdict.score,
                                "required": verdict.required, "tests": list(verdict.tests)}
        for name, value in reversed(tag_headers(verdict)):
            txn.prepend_header(name, value)
        self.log.info("session %s: %s %s score=%.1f required=%.1f tests=%s", session.id,
                      txn.id, "spam" if verdict.spam else "ham", verdict.score,
                      verdict.required, ",".join(verdict.tests) or "none")
        if verdict.spam:
            adjust_karma(session, -1)
        limit = self.opts.reject_score
        if limit is not None and verdict.score >= limit:
            return HookResult(DENY, "5.7.1 Message refused as spam (score "
                              f"{_one_decimal(verdict.score)}, limit {_one_decimal(limit)})",
                              code=550)
        return DECLINED


def parse_response(raw: bytes) -> Verdict:
    """A SYMBOLS reply: status line, headers (Spam:, Content-length), rules."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise SpamdError(f"incomplete reply ({len(raw)} bytes)")
    lines = head.split(b"\r\n")
    status = _STATUS.match(lines[0])
    if status is None:
        raise SpamdError(f"not a spamd reply: {_scanner.printable(lines[0].decode('latin-1'))}")
    if status.group(2) != b"0":
        text = status.group(3).decode("latin-1")
        raise SpamdError(f"spamd error {status.group(2).decode()} {_scanner.printable(text)}")
    verdict = None
    for line in lines[1:]:
        match = _SPAM.match(line)
        if match:
            verdict = match
    if verdict is None:
        raise SpamdError("reply has no Spam: header")
    try:
        score, required = float(verdict.group(2)), float(verdict.group(3))
    except ValueError:
        raise SpamdError("unreadable score in Spam: header") from None
    tests = tuple(t for t in body.decode("latin-1").strip().split(",") if _RULE.match(t))
    return Verdict(verdict.group(1).lower() in (b"true", b"yes"), score, required, tests)


def tag_headers(verdict: Verdict) -> list[tuple[str, str]]:
    """The header fields for a verdict, top first."""
    score = _one_decimal(verdict.score)
    status = (f"{'Yes' if verdict.spam else 'No'}, score={score} "
              f"required={_one_decimal(verdict.required)} tests=" + _fold(verdict.tests))
    fields = [("X-Spam-Flag", "YES")] if verdict.spam else []
    fields.append(("X-Spam-Score", score))
    stars = "*" * max(0, min(int(verdict.score), 50))
    if stars:
        fields.append(("X-Spam-Level", stars))
    fields.append(("X-Spam-Status", status))
    return fields


def _one_decimal(value: float) -> str:
    """1.0, -2.3 -- and 0.0 for -0.001 (never "-0.0")."""
    return f"{round(value, 1) + 0.0:.1f}"


def _fold(tests: tuple[str, ...], width: int = 60) -> str:
    """Rule names joined by commas, folded (LF + tab) to keep lines short."""
    if not tests:
        return "none"
    lines, line = [], ""
    for test in tests:
        piece = f"{line},{test}" if line else test
        if line and len(piece) > width:
            lines.append(line + ",")
            piece = test
        line = piece
    lines.append(line)
    return "\n\t".join(lines)


def neutralise_old_headers(body: Any, mode: str) -> None:
    """Rename (X-Old-Spam-*) or drop the X-Spam-* fields the message came with."""
    block = body.header_block
    if mode == "keep" or not block:
        return
    edited = _OLD_FIELD.sub(b"", block) if mode == "drop" else _OLD.sub(b"X-Old-Spam-", block)
    if edited != block:
        body.header_block = edited
