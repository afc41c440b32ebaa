"""SMTP replies, and THE table turning a hook's Result into a reply.

Every reply carries an RFC 3463 enhanced status code and ends in CRLF.
Replies are formatted once, when first sent (`Reply.wire`); those built
from per-process constants are built once (`constant`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import overload

from qsmtp.plugins.api import HookResult, Result

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


class _Wire:
    """`Reply.wire`: formatted on first use, then an ordinary attribute. A
    stage's default reply that a plugin's text replaces is never formatted.
    (functools.cached_property would take a lock on every first use.)"""

    @overload
    def __get__(self, reply: None, owner: type) -> _Wire: ...
    @overload
    def __get__(self, reply: Reply, owner: type) -> bytes: ...
    def __get__(self, reply: Reply | None, owner: type) -> _Wire | bytes:
        if reply is None:
            return self
        wire = reply.__dict__["wire"] = _format(reply.code, reply.enhanced, reply.text)
        return wire


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str  # "2.0.0"; "" only for the greeting and 334 challenges
    text: str | tuple[str, ...]  # several strings -> a multi-line reply
    close: bool = False  # the connection is closed after sending this
    wire = _Wire()  # bytes on an instance: the reply as sent (no field)

    def with_text(self, text: str | None, *, close: bool | None = None) -> Reply:
        """This reply with a plugin's message; an enhanced code at the start
        of the message replaces ours when its class matches the reply code."""
        enhanced, rest = self.enhanced, text
        if text:
            match = _ENHANCED.match(text)
            if match and int(match.group(1)) == self.code // 100:
                enhanced, rest = text[:match.end()].strip(), text[match.end():]
        lines = tuple((rest or "").splitlines()) or self.text
        # One line stays a str: _format's one-line fast path ("queued as").
        text_out = lines[0] if isinstance(lines, tuple) and len(lines) == 1 else lines
        return Reply(self.code, enhanced, text_out, self.close if close is None else close)

    @property
    def positive(self) -> bool:
        return self.code < 400


@lru_cache(maxsize=64)
def constant(code: int, enhanced: str, text: str | tuple[str, ...],
             close: bool = False) -> Reply:
    """A reply built from per-process constants (server.me, databytes ...):
    the greeting, HELO/EHLO, QUIT replies are made and formatted once per
    worker instead of once per session."""
    return Reply(code, enhanced, text, close)


def _format(code: int, enhanced: str, text: str | tuple[str, ...]) -> bytes:
    if isinstance(text, str) and _UNSAFE.search(text) is None:
        # The common case (one clean line, built per session or message).
        line = f"{code} {enhanced} {text}" if enhanced else f"{code} {text}"
        return (line.rstrip(" ") + "\r\n").encode("utf-8", "replace")
    lines = [text] if isinstance(text, str) else list(text) or [""]
    prefix = f"{enhanced} " if enhanced else ""
    out = []
    for index, line in enumerate(lines):
        sep = " " if index == len(lines) - 1 else "-"
        line = _UNSAFE.sub("?", line)
        out.append(f"{code}{sep}{prefix}{line}".rstrip(" ") + "\r\n")
    return "".join(out).encode("utf-8", "replace")


# -- hook stages -----------------------------------------------------------
CONNECT, COMMAND, DATA = "connect", "command", "data"
STAGE_OF_HOOK = {
    "pre_connection": CONNECT, "connect": CONNECT,
    "helo": COMMAND, "ehlo": COMMAND, "mail": COMMAND, "rcpt": COMMAND,
    "vrfy": COMMAND, "noop": COMMAND, "quit": COMMAND, "auth": COMMAND,
    "unrecognized_command": COMMAND,
    "data": DATA, "data_headers_end": DATA, "data_post": DATA,
    "queue_pre": DATA, "queue": DATA, "queue_post": DATA,
}

# THE table: (stage class, Result) -> reply for a refusal. OK, DONE and
# DECLINED are not here: they mean "the stage's own success / default".
REFUSALS: dict[tuple[str, Result], Reply] = {
    (CONNECT, Result.DENY): Reply(554, "5.7.1", "Connection refused", close=True),
    (CONNECT, Result.DENYSOFT): Reply(421, "4.7.0", "Connection refused, try later",
                                      close=True),
    (CONNECT, Result.DENY_DISCONNECT): Reply(554, "5.7.1", "Connection refused", close=True),
    (CONNECT, Result.DENYSOFT_DISCONNECT): Reply(421, "4.7.0", "Connection refused, try later",
                                                 close=True),
    (COMMAND, Result.DENY): Reply(550, "5.7.1", "Rejected"),
    (COMMAND, Result.DENYSOFT): Reply(450, "4.7.1", "Temporarily rejected, try later"),
    (COMMAND, Result.DENY_DISCONNECT): Reply(550, "5.7.1", "Rejected, closing", close=True),
    (COMMAND, Result.DENYSOFT_DISCONNECT): Reply(421, "4.7.0", "Temporarily rejected, closing",
                                                 close=True),
    (DATA, Result.DENY): Reply(554, "5.7.1", "Message rejected"),
    (DATA, Result.DENYSOFT): Reply(451, "4.3.0", "Message temporarily rejected, try later"),
    (DATA, Result.DENY_DISCONNECT): Reply(554, "5.7.1", "Message rejected, closing",
                                          close=True),
    (DATA, Result.DENYSOFT_DISCONNECT): Reply(421, "4.7.0", "Temporarily rejected, closing",
                                              close=True),
}
PLUGIN_FAILED = Reply(451, "4.3.0", "Temporary local problem, try again later")
_SUCCESS = (Result.OK, Result.DONE)


@overload
def decide(hook: str, hook_result: HookResult, ok: Reply,
           declined: Reply | None = None) -> Reply: ...
@overload
def decide(hook: str, hook_result: HookResult, ok: None,
           declined: Reply | None = None) -> Reply | None: ...
def decide(hook: str, hook_result: HookResult, ok: Reply | None,
           declined: Reply | None = None) -> Reply | None:
    """The reply for `hook_result` at `hook`.

    `ok` is the stage's success reply (None: carry on silently); `declined`
    the default when no plugin decided (defaults to `ok`; RCPT passes its
    fail-closed 450). A plugin failure is always 451 4.3.0. The plugin's
    message replaces the default text, its enhanced code the default one,
    and its `code` the reply code when of the same class (552 for 554)."""
    result = hook_result.result
    if hook_result.failed:
        return PLUGIN_FAILED
    if result is Result.DECLINED:
        return ok if declined is None else declined
    if result in _SUCCESS:
        if ok is None or not hook_result.message:
            return ok
        return ok.with_text(hook_result.message)
    refusal = REFUSALS[(STAGE_OF_HOOK[hook], result)]
    code = hook_result.code
    if code is not None and code // 100 == refusal.code // 100 and 400 <= code < 600:
        refusal = dataclasses.replace(refusal, code=code)
    return refusal.with_text(hook_result.message) if hook_result.message else refusal
