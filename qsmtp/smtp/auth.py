"""SMTP AUTH (RFC 4954): the SASL exchanges for PLAIN (RFC 4616) and LOGIN.

The engine only runs the exchange; a backend plugin decides through the
`auth` hook, called as `hook_auth(session, mechanism, user, secret)` with the
clear-text password.  OK/DONE -> 235; DENY or no plugin deciding (DECLINED)
-> 535 after `[auth] failure_delay`, counted against the client's IP;
DENYSOFT or a failing plugin -> 454 4.7.0; the _DISCONNECT variants close.

CRAM-MD5 is not offered: it needs the clear-text password (or an equivalent
key) on the server, which neither built-in backend has (auth_file keeps
scrypt hashes, checkpassword only answers yes/no).

Where AUTH is allowed: inside TLS, or on a listener named in `[auth]
plaintext_services`.  Elsewhere `538 5.7.11` (and it is not advertised).
Credentials never reach a log: the session's debug log shows AUTH lines
redacted (`conversation.redact`), continuation lines are never logged, and
failures are logged without the user name (it is often a mistyped password).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time

from qsmtp.plugins.api import Result
from qsmtp.smtp.authlimit import FailureLimiter, LimiterUnavailable
from qsmtp.smtp.conversation import Conversation
from qsmtp.smtp.reader import BARE, TOO_LONG
from qsmtp.smtp.replies import Reply

log = logging.getLogger("qsmtp.session")

MECHANISMS = ("PLAIN", "LOGIN")
ADVERTISED = "AUTH " + " ".join(MECHANISMS)

AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_BAD = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TEMP = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
ALREADY = Reply(503, "5.5.1", "Already authenticated")
NEED_EHLO = Reply(503, "5.5.1", "Send EHLO first")
IN_TRANSACTION = Reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
NEED_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
UNKNOWN_MECH = Reply(504, "5.5.4", "Unrecognized authentication type")
CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication line too long")
TEMP_CLOSE = Reply(421, "4.7.0", "Temporary authentication failure, closing", close=True)
TOO_MANY = Reply(421, "4.7.0", "Too many failed authentication attempts, try later",
                 close=True)


class _Abort(Exception):
    """The exchange ends with this reply (nothing was verified)."""

    def __init__(self, reply: Reply):
        super().__init__(reply.text)
        self.reply = reply


def allowed_here(conv: Conversation) -> bool:
    session = conv.session
    if session.tls:
        return True
    services = conv.config.auth.plaintext_services
    conn = session.conn
    return bool(services) and (conn.service in services
                               or f":{conn.local_port}" in services)


def offered(conv: Conversation) -> bool:
    """Whether EHLO lists AUTH."""
    return (not conv.session.auth_user and conv.app.plugins.has("auth")
            and allowed_here(conv))


def authenticate(conv: Conversation, arg: str) -> None:
    refusal = _state_refusal(conv)
    if refusal is not None:
        return conv.reply(refusal)
    mechanism, _, initial = arg.partition(" ")
    mechanism, initial = mechanism.upper(), initial.strip(" ")
    if not mechanism:
        return conv.reply(SYNTAX)
    if mechanism not in MECHANISMS:
        return conv.reply(UNKNOWN_MECH)
    limiter = FailureLimiter.from_config(conv.config)
    peer = conv.session.conn.peer_ip
    try:
        blocked = limiter.blocked(peer)
    except LimiterUnavailable:
        return conv.refuse(AUTH_TEMP)
    if blocked:
        log.info("session %s: AUTH refused, %s is over the failed-attempt limit",
                 conv.session.id, peer)
        return conv.refuse(TOO_MANY)
    try:
        exchange = _plain if mechanism == "PLAIN" else _login
        user, secret = exchange(conv, initial)
    except _Abort as exc:
        return conv.reply(exc.reply)
    _verify(conv, limiter, mechanism, user, secret)


def _state_refusal(conv: Conversation) -> Reply | None:
    session = conv.session
    if session.auth_user:
        return ALREADY
    if not session.helo_host or not session.esmtp:
        return NEED_EHLO
    if session.transaction is not None:
        return IN_TRANSACTION
    if not allowed_here(conv):
        return NEED_TLS
    return None


# -- the exchanges -----------------------------------------------------------
def _plain(conv: Conversation, initial: str) -> tuple[str, str]:
    """RFC 4616: [authzid] NUL authcid NUL passwd, in one response."""
    message = _decode(initial.encode("ascii", "replace")) if initial else _ask(conv, b"")
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise _Abort(BAD_BASE64)
    authzid, user, secret = (_text(part) for part in parts)
    if authzid and authzid != user:
        # Acting as someone else (proxy authorization) is not supported.
        raise _Abort(AUTH_BAD)
    return user, secret


def _login(conv: Conversation, initial: str) -> tuple[str, str]:
    """The LOGIN mechanism: user name, then password, each its own 334."""
    user = _decode(initial.encode("ascii", "replace")) if initial else _ask(conv, b"Username:")
    secret = _ask(conv, b"Password:")
    if b"\0" in user or b"\0" in secret:
        raise _Abort(BAD_BASE64)
    return _text(user), _text(secret)


def _ask(conv: Conversation, challenge: bytes) -> bytes:
    """Send a 334 challenge (base64, RFC 4954 4) and read the client's
    response line, up to 12288 octets."""
    kind, line = conv.ask(challenge)
    if kind == TOO_LONG:
        raise _Abort(LINE_TOO_LONG)
    if kind == BARE:
        raise _Abort(BAD_BASE64)
    if line.strip(b" ") == b"*":
        raise _Abort(CANCELLED)
    return _decode(line)


def _decode(text: bytes) -> bytes:
    text = text.strip(b" ")
    if text == b"=":  # RFC 4954: "=" is an empty initial response
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Abort(BAD_BASE64) from None


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Abort(BAD_BASE64) from None


# -- the verdict ---------------------------------------------------------------
def _verify(conv: Conversation, limiter: FailureLimiter, mechanism: str,
            user: str, secret: str) -> None:
    session = conv.session
    hook = conv.hook("auth", mechanism, user, secret)
    result = hook.result
    if hook.failed or result is Result.DENYSOFT:
        return conv.reply(AUTH_TEMP)
    if result is Result.DENYSOFT_DISCONNECT:
        return conv.reply(TEMP_CLOSE)
    if result in (Result.OK, Result.DONE):
        session.auth_user = user
        session.notes["auth_mechanism"] = mechanism
        log.info("session %s: %s authenticated as %r (%s)", session.id,
                 session.conn.peer_ip, user, mechanism)
        return conv.reply(AUTH_OK)
    failures = limiter.record(session.conn.peer_ip)
    # No user name here: a failed "user name" is often a misplaced password.
    log.info("session %s: AUTH %s failed from %s (%d failures in the window)",
             session.id, mechanism, session.conn.peer_ip, failures)
    delay = conv.config.auth.failure_delay
    if delay:
        time.sleep(delay)  # slows guessing down, per connection
    close = result is Result.DENY_DISCONNECT
    conv.refuse(AUTH_BAD.with_text(None, close=True) if close else AUTH_BAD)
