"""basicheaders -- refuse messages without the header fields RFC 5322
requires (From:, Date:), or dated too far in the past or future.

Checked once the header section has been received (`data_headers_end`);
the refusal is sent after the whole message is read, and the content
scanners never see a refused message.  A `Date:` that does not parse as an
RFC 5322 date counts as missing.  Relay clients, authenticated senders and
connections marked `whitelisthost` (hosts_allow, karma) are not checked: a
mail client submitting through us may leave Date: to its server.

Options:
- `require` (list, default `["From", "Date"]`): fields that must be present
  and not empty (any names; e.g. add `"Message-ID"`, or set `[]` to only
  check dates).
- `past_days` (int, default 0 = no check): refuse a `Date:` more than this
  many days in the past.
- `future_days` (int, default 0 = no check): refuse a `Date:` more than this
  many days in the future.
- `action` (default `deny`, `554 5.7.1`): `deny`, `denysoft`,
  `deny_disconnect`, `denysoft_disconnect`, `naughty` (refused later by the
  naughty plugin) or `note` (log only).

qpsmtpd mapping: `check_basicheaders days N` -> `past_days = N`,
`future_days = N`; `reject 0` -> `action = "note"`; `reject_type temp` ->
`action = "denysoft"`.

qpsmtpd's `size_limit` / `check_size` is not a plugin here: the message size
limit is `server.databytes` (advertised as SIZE, over-size messages get
`552 5.3.4`, read and dropped).  The spamassassin and clamav plugins have
their own `max_size` for what they scan.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING, Any

from qsmtp.plugins.api import DECLINED, HookReturn, Option, Plugin, PluginError
from qsmtp.plugins.builtin.naughty import ACTIONS, act, trusted

if TYPE_CHECKING:
    from qsmtp.smtp.state import Session


DAY = 86400


class BasicHeaders(Plugin):
    """Refuses messages missing From:/Date: or dated out of range."""

    options = {
        "require": Option(list, ["From", "Date"], "header fields that must be present"),
        "past_days": Option(int, 0, "max age of Date: in days (0 = no check)",
                             bounds=(0, 36500)),
        "future_days": Option(int, 0, "max days Date: may be ahead (0 = no check)",
                               bounds=(0, 36500)),
        "action": Option(str, "deny", "what a failed check does", choices=ACTIONS),
    }

    def setup(self) -> None:
        for name in self.opts.require:
            if not isinstance(name, str) or not name or ":" in name or not name.isprintable():
                raise PluginError(self.name, "require", f"not a header field name: {name!r}")
        for key in ("past_days", "future_days"):
            if getattr(self.opts, key) < 0:
                raise PluginError(self.name, key, "must be >= 0")

    def hook_data_headers_end(self, session: Session) -> HookReturn:
        txn = session.transaction
        if (txn is None or txn.body is None or session.relay_client or session.auth_user
                or trusted(session)):
            return DECLINED
        problem = self.problem(txn.body.headers(), time.time())
        if problem is None:
            return DECLINED
        return act(session, self, self.opts.action, problem)

    def problem(self, headers: Any, now: float) -> str | None:
        """What is wrong with the header section, or None."""
        for name in self.opts.require:
            value = headers.get(name)
            if value is None or not str(value).strip():
                return f"Message has no {name}: header field"
        raw_date = headers.get("Date")
        if raw_date is None:
            return None  # not required, and absent: nothing to check
        stamp = parse_date(str(raw_date))
        if stamp is None:
            if "date" in (n.lower() for n in self.opts.require):
                return "Message has no valid Date: header field"
            return None
        if self.opts.past_days and stamp < now - self.opts.past_days * DAY:
            return "The Date: header field is too far in the past"
        if self.opts.future_days and stamp > now + self.opts.future_days * DAY:
            return "The Date: header field is too far in the future"
        return None


def parse_date(value: str) -> float | None:
    """An RFC 5322 date as a POSIX timestamp; None when it does not parse."""
    try:
        parsed = email.utils.parsedate_tz(" ".join(value.split()))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        return float(email.utils.mktime_tz(parsed))
    except (TypeError, ValueError, OverflowError):
        return None
