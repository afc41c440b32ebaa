"""badrcptto -- refuse listed recipients.

Same entry syntax as badmailfrom: `user@domain [message]` (exact),
`@domain [message]` (every address there), and `patterns` (regular
expressions searched in the address, e.g. `%` or `!` routing tricks,
`[message]` after a space/tab).  Case-insensitive; domains compared as
IDNA 2008 A-labels, as in badmailfrom.  Refused at RCPT with
`550 5.7.1 mail to <rcpt> not accepted here` (or the entry's message).

Options:
- `entries` (list), `patterns` (list), `file` (a qpsmtpd badrcptto file).
- `action` (default `deny`): deny, denysoft, deny_disconnect,
  denysoft_disconnect, naughty, note.
- `message` (default `mail to {rcpt} not accepted here`).

qpsmtpd mapping: config/badrcptto -> `entries` (or `file`); its regex lines
and config/badrcptto_patterns -> `patterns`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qsmtp.plugins.api import HookReturn, Option, Params, Plugin, PluginError
from qsmtp.plugins.builtin.badmailfrom import AddressList
from qsmtp.plugins.builtin.naughty import ACTIONS, act

if TYPE_CHECKING:
    from qsmtp.smtp.address import Address
    from qsmtp.smtp.state import Session



class Badrcptto(Plugin):
    """Refuses recipients listed in `entries`/`patterns`/`file`."""

    options = {
        "entries": Option(list, [], "user@domain or @domain, optional message"),
        "patterns": Option(list, [], "regular expressions, optional message"),
        "file": Option(str, "", "qpsmtpd badrcptto file read at load"),
        "action": Option(str, "deny", "what a match does", choices=ACTIONS),
        "message": Option(str, "mail to {rcpt} not accepted here", "reply text"),
    }

    def setup(self) -> None:
        self.list = AddressList(self.name, self.opts.entries, self.opts.patterns,
                                self.opts.file)
        try:
            self.opts.message.format(rcpt="")
        except (KeyError, IndexError, ValueError) as exc:
            raise PluginError(self.name, "message", f"bad placeholder: {exc}") from None

    def hook_rcpt(self, session: Session, recipient: Address, params: Params) -> HookReturn:
        matched, message = self.list.match(recipient)
        if not matched:
            return None
        text = message or self.opts.message.format(rcpt=recipient.address)
        return act(session, self, self.opts.action, text)
