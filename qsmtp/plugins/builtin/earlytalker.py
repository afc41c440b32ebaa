"""earlytalker -- refuse clients that talk before the greeting.

An RFC 5321 client waits for the 220 banner; spam engines often blast their
commands straight away.  At connect (before the banner is sent) the plugin
waits up to `wait` seconds for the client to send anything; a client that
did is an early talker.  With `check_at = "data"` it instead waits after the
DATA command, before the 354 reply (a client must not send the message
before it).  Connections marked `whitelisthost` are not checked (and not
delayed).

Uses the engine's `session.peek_early_talk(wait) -> bool`: True when client
bytes are already buffered or arrive within `wait` seconds, without
consuming them.

Options:
- `wait` (float seconds, default 1.0, 0..hook_timeout): how long to listen.
- `check_at` (`connect` | `data`, default `connect`).
- `defer_reject` (bool, default false): refuse at MAIL instead of at once
  (the client still gets the banner, and the log shows the sender).
- `action` (default `denysoft`): deny, denysoft, deny_disconnect,
  denysoft_disconnect, naughty, note.
- `message` (default `Connecting host started transmitting before SMTP greeting`).

qpsmtpd mapping: `wait N` -> `wait`; `defer-reject 1` -> `defer_reject = true`;
`check-at CONNECT|DATA` -> `check_at`; `action deny|denysoft|log` and newer
`reject 0|1|naughty` + `reject_type` -> `action` (`log`/`reject 0` -> `note`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsmtp.plugins.api import HookReturn, Option, Params, Plugin, PluginError
from qsmtp.plugins.builtin.naughty import ACTIONS, act, trusted

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session


NOTE = "earlytalker"


class Earlytalker(Plugin):
    """Refuses clients that send data before the greeting (or before 354)."""

    options = {
        "wait": Option(float, 1.0, "seconds to listen for early talk",
                       bounds=(0, 60)),
        "check_at": Option(str, "connect", "when to listen", choices=("connect", "data")),
        "defer_reject": Option(bool, False, "refuse at MAIL instead of at once"),
        "action": Option(str, "denysoft", "what an early talker gets", choices=ACTIONS),
        "message": Option(str, "Connecting host started transmitting before SMTP greeting",
                          "reply text"),
    }

    def setup(self) -> None:
        budget = self.config.server.hook_timeout
        if self.opts.wait < 0 or self.opts.wait >= budget:
            raise PluginError(self.name, "wait",
                              f"must be >= 0 and below server.hook_timeout ({budget})")

    def _talked(self, session: Session) -> bool:
        return bool(session.peek_early_talk(self.opts.wait))

    def _check(self, session: Session, message: str) -> HookReturn:
        if trusted(session) or not self._talked(session):
            return None
        session.notes[NOTE] = message
        self.log.info("session %s: %s is an early talker", session.id, session.conn.peer_ip)
        if self.opts.defer_reject and self.opts.action != "naughty":
            return None
        return act(session, self, self.opts.action, message)

    def hook_connect(self, session: Session) -> HookReturn:
        if self.opts.check_at != "connect":
            return None
        return self._check(session, self.opts.message)

    def hook_data(self, session: Session) -> HookReturn:
        if self.opts.check_at != "data":
            return None
        return self._check(session, "Client started transmitting before the 354 reply")

    def hook_mail(self, session: Session, sender: Address | None, params: Params) -> HookReturn:
        message = session.notes.get(NOTE)
        if not (message and self.opts.defer_reject) or self.opts.action == "naughty":
            return None
        return act(session, self, self.opts.action, message)
