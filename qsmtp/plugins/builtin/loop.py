"""loop -- refuse messages that have travelled too many hops (a mail loop).

When the header section has been received (`data_headers_end`), the
`Received:` and `Delivered-To:` fields in it are counted (as qmail-smtpd and
qpsmtpd's `loop` do); more than `max_hops` of them and the message is
refused with `554 5.4.6 Too many hops, this message is looping` (RFC 3463
5.4.6: routing loop detected).  The `Received:` qsmtp adds itself is not
counted.  The refusal is sent once the whole message has been read; the
content scanners do not run on it.

Options:
- `max_hops` (int, default 100, RFC 5321 6.3's "at least 100"): the most
  trace fields a message may carry.

qpsmtpd mapping: `loop N` -> `max_hops = N`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from qsmtp.plugins.api import DECLINED, DENY, HookReturn, Option, Plugin, PluginError

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session


_TRACE = re.compile(rb"(?mi)^(?:Received|Delivered-To)[ \t]*:")


class Loop(Plugin):
    """Refuses messages with more than `max_hops` Received/Delivered-To fields."""

    options = {"max_hops": Option(int, 100, "most Received + Delivered-To fields allowed",
                                   bounds=(1, 1000))}

    def setup(self) -> None:
        if self.opts.max_hops < 1:
            raise PluginError(self.name, "max_hops", "must be >= 1")

    def hook_data_headers_end(self, session: Session) -> HookReturn:
        txn = session.transaction
        if txn is None or txn.body is None:
            return DECLINED
        hops = count_hops(txn.body.header_block)
        txn.notes["hops"] = hops
        if hops > self.opts.max_hops:
            self.log.warning("session %s: %s refused: %d hops > max_hops %d", session.id,
                             txn.id, hops, self.opts.max_hops)
            return DENY, "5.4.6 Too many hops, this message is looping"
        return DECLINED


def count_hops(header_block: bytes) -> int:
    """Received: and Delivered-To: fields (continuation lines don't count)."""
    return len(_TRACE.findall(header_block))
