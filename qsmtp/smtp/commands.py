"""The verb table: one handler per SMTP verb, plus the line-level checks
that run before any verb (over-long lines, bare CR/LF, NUL, unknown verbs).

A handler is `handler(conv, argument: str)`; it queues replies on `conv`
(a conversation.Conversation) and never writes to the socket itself, so
replies to pipelined commands leave in one send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from qsmtp import domains
from qsmtp.smtp import auth, chars, transfer
from qsmtp.smtp.address import AddressError, parse_path, split_path
from qsmtp.smtp.conversation import Conversation
from qsmtp.smtp.reader import BARE, TOO_LONG
from qsmtp.smtp.replies import Reply, constant

log = logging.getLogger("qsmtp.session")

LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")
BAD_LINE_END = Reply(500, "5.5.2", "Bare CR or LF in command line, not executed")
NUL_IN_LINE = Reply(500, "5.5.2", "NUL character in command line, not executed")
UNRECOGNIZED = Reply(500, "5.5.2", "Command unrecognized")
BAD_SEQUENCE_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command first")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
NO_ARGS = Reply(501, "5.5.4", "Syntax error: no arguments allowed")
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RCPT_OK = Reply(250, "2.1.5", "Recipient ok")
RCPT_NOBODY = Reply(450, "4.7.1", "Recipient not accepted here, try later")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
OK = Reply(250, "2.0.0", "Ok")
VRFY_DEFAULT = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
NO_TLS = Reply(502, "5.5.1", "STARTTLS not available")
TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")
TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
NO_AUTH = Reply(502, "5.5.1", "AUTH not available")
HTTP_VERBS = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "DELETE"})
# esmtp-value: any of %d33-60 / %d62-126 (RFC 5321 4.1.2)
_VALUE_BAD = frozenset("=") | frozenset(chr(c) for c in range(0, 33)) | {"\x7f"}


# -- line-level checks -------------------------------------------------------
def execute(conv: Conversation, kind: int, line: bytes) -> None:
    if kind == TOO_LONG:
        return _refuse_line(conv, LINE_TOO_LONG)
    if kind == BARE:
        return _refuse_line(conv, BAD_LINE_END)
    if b"\x00" in line:
        return _refuse_line(conv, NUL_IN_LINE)
    verb, _, raw_arg = line.partition(b" ")
    handler = _VERBS_AS_SENT.get(verb)  # most clients send verbs in upper case
    if handler is None:
        name = verb.decode("ascii", "replace").upper()
        handler = VERBS.get(name)
        if handler is None:
            return _unknown(conv, name, raw_arg)
    handler(conv, raw_arg.decode("utf-8", "surrogateescape").strip(" "))


# Malformed lines are not unknown verbs (max_unrecognized budgets only those), but a
# client that sends nothing else is a flood: it gets a budget of its own.
MALFORMED_LINE_BUDGET = 20


def _refuse_line(conv: Conversation, reply: Reply) -> None:
    conv.malformed += 1
    if conv.malformed > MALFORMED_LINE_BUDGET:
        return conv.reply(Reply(421, "4.7.0", f"{conv.me} Too many malformed command lines, "
                                "closing", close=True))
    conv.reply(reply)


def _unknown(conv: Conversation, verb: str, raw_arg: bytes) -> None:
    if conv.commands_read == 1 and verb in HTTP_VERBS:
        log.info("session %s: %s spoke HTTP (%s); closed", conv.session.id,
                 conv.session.conn.peer_ip, verb)
        return conv.refuse(UNRECOGNIZED.with_text(None, close=True))
    arg = raw_arg.decode("utf-8", "replace")
    reply = conv.hook_refusal("unrecognized_command", verb, arg) or UNRECOGNIZED
    if not reply.close:
        conv.unrecognized += 1
        if conv.unrecognized > conv.config.server.max_unrecognized:
            return conv.reply(Reply(421, "4.7.0", f"{conv.me} Too many unrecognized commands, "
                                    "closing", close=True), by_engine=True)
    conv.reply(reply)


# -- HELO / EHLO ---------------------------------------------------------------
def do_helo(conv: Conversation, arg: str) -> None:
    _greeting(conv, arg, esmtp=False)


def do_ehlo(conv: Conversation, arg: str) -> None:
    _greeting(conv, arg, esmtp=True)


def _greeting(conv: Conversation, host: str, esmtp: bool) -> None:
    verb = "EHLO" if esmtp else "HELO"
    if not host or " " in host:
        return conv.reply(Reply(501, "5.5.4", f"Syntax: {verb} hostname"))
    reason = chars.refused(host) or _non_ascii_not_a_domain(host)
    if reason is not None:  # never reaches Received: or a plugin
        return conv.reply(Reply(501, "5.5.4", f"Syntax: {verb} hostname ({reason})"))
    conv.drop_transaction()
    ok = ehlo_reply(conv) if esmtp else constant(250, "", conv.me)
    reply = conv.hook_reply(verb.lower(), host, ok=ok)
    if reply.positive:
        conv.session.helo_host = host
        conv.session.esmtp = esmtp
    conv.reply(reply)


def _non_ascii_not_a_domain(host: str) -> str | None:
    """A non-ASCII HELO name must be a domain of U-labels (RFC 6531 3.7.1,
    IDNA 2008). ASCII junk is left to the helo plugin's policy, as qpsmtpd did."""
    if host.isascii():
        return None
    try:
        domains.to_ascii(host)
    except domains.DomainError:
        return "not a domain under IDNA 2008"
    return None


def ehlo_reply(conv: Conversation) -> Reply:
    session = conv.session
    lines = [conv.me, "PIPELINING", f"SIZE {conv.config.server.databytes}", "8BITMIME",
             "ENHANCEDSTATUSCODES", "SMTPUTF8"]
    if conv.app.tls_context is not None and not session.tls:
        lines.append("STARTTLS")
    if auth.offered(conv):
        lines.append(auth.ADVERTISED)
    return constant(250, "", tuple(lines))


# -- MAIL / RCPT -------------------------------------------------------------
def do_mail(conv: Conversation, arg: str) -> None:
    session = conv.session
    if not session.helo_host:
        return conv.reply(BAD_SEQUENCE_HELO)
    if session.transaction is not None:
        return conv.reply(NESTED_MAIL)
    if arg[:5].upper() != "FROM:":
        return conv.reply(MAIL_SYNTAX)
    try:
        path, rest = split_path(arg[5:].lstrip(" "))
        params = parse_params(rest, session.esmtp)
        refusal = _check_mail_params(conv, params)
        if refusal is not None:
            return conv.reply(refusal)
        sender = parse_path(path, allow_null=True, smtputf8="SMTPUTF8" in params)
    except AddressError as exc:
        return conv.reply(_address_refusal(exc, "sender", "5.1.7", "5.1.8"))
    except ParamError as exc:
        return conv.reply(exc.reply)
    conv.open_transaction(sender, params)
    reply = conv.hook_reply("mail", sender, params, ok=SENDER_OK)
    if reply.positive:
        return conv.reply(reply)
    conv.drop_transaction(refused=True)
    conv.refuse(reply)


def do_rcpt(conv: Conversation, arg: str) -> None:
    txn = conv.session.transaction
    if txn is None:
        return conv.reply(NEED_MAIL)
    if arg[:3].upper() != "TO:":
        return conv.reply(RCPT_SYNTAX)
    try:
        path, rest = split_path(arg[3:].lstrip(" "))
        params = parse_params(rest, conv.session.esmtp)
        if params:
            return conv.reply(Reply(555, "5.5.4", f"Unsupported parameter {next(iter(params))}"))
        rcpt = parse_path(path, allow_null=False, allow_postmaster=True,
                          smtputf8="SMTPUTF8" in txn.mail_params)
    except AddressError as exc:
        return conv.reply(_address_refusal(exc, "recipient", "5.1.3", "5.1.3"))
    except ParamError as exc:
        return conv.reply(exc.reply)
    if len(txn.recipients) >= conv.config.server.max_recipients:
        return conv.reply(TOO_MANY_RCPTS)
    reply = conv.hook_reply("rcpt", rcpt, params, ok=RCPT_OK, declined=RCPT_NOBODY)
    if reply.positive:
        txn.recipients.append(rcpt)
        return conv.reply(reply)
    conv.refuse(reply)


def _address_refusal(exc: AddressError, who: str, mailbox: str, system: str) -> Reply:
    """501 for the RFC 5321 grammar; 553 ("mailbox name not allowed") for
    bytes no address may hold and for a domain IDNA 2008 refuses (RFC 3463:
    X.1.7/X.1.3 bad mailbox syntax, X.1.8 bad sender's system address)."""
    if exc.kind == "syntax":
        return Reply(501, mailbox, f"Bad {who} address syntax: {exc}")
    return Reply(553, system if exc.kind == "domain" else mailbox,
                 f"Bad {who} address: {exc}")


class ParamError(Exception):
    def __init__(self, reply: Reply):
        super().__init__(reply.text)
        self.reply = reply


def parse_params(text: str, esmtp: bool) -> dict[str, str | None]:
    """`KEY=VALUE KEY ...` -> {KEY: value}; keys upper-cased."""
    params: dict[str, str | None] = {}
    for token in text.split():
        if not esmtp:
            raise ParamError(Reply(555, "5.5.4", "Parameters need EHLO"))
        key, eq, value = token.partition("=")
        key = key.upper()
        if not key or (eq and (not value or _VALUE_BAD.intersection(value))) \
                or not key.isascii() or key in params:
            raise ParamError(Reply(501, "5.5.4", f"Bad parameter {token!r}"))
        params[key] = value if eq else None
    return params


def _check_mail_params(conv: Conversation, params: dict[str, str | None]) -> Reply | None:
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or not value.isascii():
                return Reply(501, "5.5.4", "Bad SIZE parameter")
            if int(value) > conv.config.server.databytes:
                return transfer.TOO_BIG
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                return Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
        elif key == "AUTH":
            # RFC 4954 5: accepted; the submitter's identity is not trusted.
            if value is None:
                return Reply(501, "5.5.4", "AUTH needs a value")
        elif key == "SMTPUTF8":
            if value is not None:
                return Reply(501, "5.5.4", "SMTPUTF8 takes no value")
        else:
            return Reply(555, "5.5.4", f"Unsupported parameter {key}")
    return None


# -- the rest ------------------------------------------------------------------
def do_data(conv: Conversation, arg: str) -> None:
    if arg:
        return conv.reply(NO_ARGS)
    txn = conv.session.transaction
    if txn is None:
        return conv.reply(NEED_MAIL)
    if not txn.recipients:
        return conv.reply(NEED_RCPT)
    transfer.receive(conv, txn)


def do_rset(conv: Conversation, arg: str) -> None:
    if arg:
        return conv.reply(NO_ARGS)
    conv.drop_transaction()
    conv.reply(OK)


def do_noop(conv: Conversation, arg: str) -> None:
    conv.reply(conv.hook_reply("noop", ok=OK))


def do_quit(conv: Conversation, arg: str) -> None:
    bye = constant(221, "2.0.0", f"{conv.me} Bye", True)
    reply = conv.hook_reply("quit", ok=bye)
    conv.reply(reply if reply.close else reply.with_text(None, close=True))


def do_vrfy(conv: Conversation, arg: str) -> None:
    if not arg:
        return conv.reply(Reply(501, "5.5.4", "Syntax: VRFY address"))
    conv.reply(conv.hook_reply("vrfy", arg, ok=Reply(250, "2.1.5", arg),
                               declined=VRFY_DEFAULT))


def do_help(conv: Conversation, arg: str) -> None:
    conv.reply(HELP)


def do_starttls(conv: Conversation, arg: str) -> None:
    if conv.session.tls:
        return conv.reply(TLS_ACTIVE)
    context = conv.app.tls_context
    if context is None:
        return conv.reply(NO_TLS)
    if arg:
        return conv.reply(NO_ARGS)
    conv.reply(TLS_READY)
    transfer.start_tls(conv, context)


def do_auth(conv: Conversation, arg: str) -> None:
    if not conv.app.plugins.has("auth"):
        return conv.reply(NO_AUTH)
    auth.authenticate(conv, arg)


Handler = Callable[[Conversation, str], None]
VERBS: dict[str, Handler] = {
    "EHLO": do_ehlo, "HELO": do_helo, "MAIL": do_mail, "RCPT": do_rcpt,
    "DATA": do_data, "RSET": do_rset, "NOOP": do_noop, "QUIT": do_quit,
    "VRFY": do_vrfy, "HELP": do_help, "STARTTLS": do_starttls, "AUTH": do_auth,
}
_VERBS_AS_SENT = {name.encode(): handler for name, handler in VERBS.items()}
HELP = Reply(214, "2.0.0", ("qsmtp commands:", " ".join(VERBS), "See RFC 5321"))
