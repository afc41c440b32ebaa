"""naughty -- refuse flagged connections later, with the whole envelope logged.

Other plugins whose `action` is `"naughty"` (dnsbl, rhsbl, helo, fcrdns,
earlytalker, resolvable_fromhost, badmailfrom, karma ...) do not refuse on the
spot: they set `session.notes["naughty"]` (the reason, first one wins) and
`session.notes["naughty_reject_type"]`, and this plugin refuses at the stage
named by `reject`, so the log line of the refusal carries the sender and
recipients (or the client gets to talk to postmaster before that).

Options:
- `reject` (`connect` | `mail` | `rcpt` | `data` | `data_post`, default
  `data`): the first stage at which a flagged connection is refused.  It is
  checked at that stage and every later one (a flag raised at RCPT with
  `reject = "mail"` is acted on at the next RCPT or at DATA).  qpsmtpd's
  default was `rcpt`; qsmtp defaults to `data` (full envelope in the log).
- `reject_type` (`perm` | `temp` | `disconnect`, default `disconnect`): used
  when the flagging plugin did not ask for a type.

Place it first in `[[plugins]]` when `reject = "connect"` (later plugins
cannot flag before it runs at that stage).  Mail to `postmaster` is never
refused at RCPT by naughty (RFC 5321 4.5.1).

qpsmtpd mapping: `naughty reject data` -> `reject = "data"`,
`naughty reject_type temp` -> `reject_type = "temp"`.

This module also holds `act()`, the one place turning an `action` option
(`deny` `denysoft` `deny_disconnect` `denysoft_disconnect` `naughty` `note`)
into a hook result, shared by the other check plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsmtp.plugins.api import (
    DECLINED,
    DENY,
    DENY_DISCONNECT,
    DENYSOFT,
    DENYSOFT_DISCONNECT,
    Option,
    Plugin,
)

if TYPE_CHECKING:
    from qsmtp.plugins.api import HookReturn, Params, Plugin
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session


# `action` values every check plugin accepts (qpsmtpd: reject 0|1|naughty +
# reject_type perm|temp|disconnect, folded into one option).
ACTIONS = ("deny", "denysoft", "deny_disconnect", "denysoft_disconnect", "naughty", "note")
_RESULTS = {
    "deny": (DENY, "5.7.1"),
    "denysoft": (DENYSOFT, "4.7.1"),
    "deny_disconnect": (DENY_DISCONNECT, "5.7.1"),
    "denysoft_disconnect": (DENYSOFT_DISCONNECT, "4.7.0"),
}
_TYPE_TO_ACTION = {"perm": "deny", "temp": "denysoft", "disconnect": "deny_disconnect"}
STAGES = ("connect", "mail", "rcpt", "data", "data_post")


def with_code(code: str, message: str) -> str:
    """Prefix an enhanced status code unless the message carries one."""
    head = message.split(" ", 1)[0]
    if len(head) >= 5 and head[0] in "245" and head[1] == "." and head.count(".") == 2:
        return message
    return f"{code} {message}"


def adjust_karma(session: Session, delta: int) -> None:
    """Per-connection karma score, read by the karma plugin at disconnect."""
    session.notes["karma"] = session.notes.get("karma", 0) + delta


def trusted(session: Session) -> bool:
    """A connection other checks skip: whitelisted by hosts_allow/karma/..."""
    return bool(session.notes.get("whitelisthost"))


def act(session: Session, plugin: Plugin, action: str, message: str,
        reject_type: str | None = None) -> HookReturn:
    """Apply a check plugin's `action` to a positive finding."""
    plugin.log.info("session %s %s: %s", session.id, action, message)
    if action == "note":
        return DECLINED
    if action == "naughty":
        if "naughty" not in session.notes:
            session.notes["naughty"] = f"{plugin.name}: {message}"
            session.notes["naughty_reject_type"] = reject_type
            session.notes["naughty_message"] = message
            adjust_karma(session, -1)
        return DECLINED
    adjust_karma(session, -1)
    result, code = _RESULTS[action]
    return result, with_code(code, message)


class Naughty(Plugin):
    """Refuses connections other plugins flagged as naughty, at a later stage."""

    options = {
        "reject": Option(str, "data", "first stage that refuses", choices=STAGES),
        "reject_type": Option(str, "disconnect", "default refusal type",
                              choices=("perm", "temp", "disconnect")),
    }

    def setup(self) -> None:
        self.first = STAGES.index(self.opts.reject)

    def _check(self, session: Session, stage: str) -> HookReturn:
        if STAGES.index(stage) < self.first or trusted(session):
            return None
        reason = session.notes.get("naughty")
        if not reason:
            return None
        if session.notes.get("naughty_logged") is None:
            session.notes["naughty_logged"] = True
            self.log.warning("session %s refused at %s: %s%s", session.id, stage, reason,
                             _envelope(session))
        kind = session.notes.get("naughty_reject_type") or self.opts.reject_type
        action = _TYPE_TO_ACTION[kind]
        result, code = _RESULTS[action]
        return result, with_code(code, session.notes.get("naughty_message") or reason)

    def hook_connect(self, session: Session) -> HookReturn:
        return self._check(session, "connect")

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> HookReturn:
        return self._check(session, "mail")

    def hook_rcpt(self, session: Session, recipient: Address, params: Params) -> HookReturn:
        if recipient.local_unquoted.lower() == "postmaster":
            return None  # always reachable (RFC 5321 4.5.1)
        return self._check(session, "rcpt")

    def hook_data(self, session: Session) -> HookReturn:
        return self._check(session, "data")

    def hook_data_post(self, session: Session) -> HookReturn:
        return self._check(session, "data_post")


def _envelope(session: Session) -> str:
    txn = session.transaction
    if txn is None:
        return ""
    rcpts = ",".join(str(r) for r in txn.recipients)
    return f" (from=<{txn.sender}> to={rcpts or '-'})"
