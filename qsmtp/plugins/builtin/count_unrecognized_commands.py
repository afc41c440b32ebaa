"""count_unrecognized_commands -- disconnect clients that keep sending
unknown verbs.

Each unknown verb counts; once the count reaches `count`, the client gets
`421 4.7.0 Closing connection, N unrecognized commands` and is disconnected.
(The engine's own `server.max_unrecognized` budget applies too; this plugin
lets a listed plugin order choose a stricter one and feeds karma.)

Options:
- `count` (int >= 1, default 4): unknown verbs allowed before disconnecting.

qpsmtpd mapping: `count_unrecognized_commands 4` -> `count = 4`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qsmtp.plugins.api import DENYSOFT_DISCONNECT, HookReturn, Option, Plugin
from qsmtp.plugins.builtin.naughty import adjust_karma

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session


NOTE = "unrec_cmd_count"


class CountUnrecognizedCommands(Plugin):
    """Disconnects a client after `count` unrecognized commands."""

    options = {"count": Option(int, 4, "unknown verbs before disconnecting",
                                bounds=(1, 1000))}

    def hook_unrecognized_command(self, session: Session, verb: str, argument: Any) -> HookReturn:
        seen = session.notes.get(NOTE, 0) + 1
        session.notes[NOTE] = seen
        self.log.info("session %s: unrecognized command %r (%d)", session.id, verb, seen)
        if seen >= self.opts.count:
            adjust_karma(session, -1)
            return (DENYSOFT_DISCONNECT,
                    f"4.7.0 Closing connection, {seen} unrecognized commands")
        return None
